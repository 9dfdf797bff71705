"""Run a step from a Snakemake rule script, the command line or a test, with the same arguments.

Every step is a function ``step(*, input, output, params, threads=1, wildcards=None)`` taking plain
dicts of paths and values (each subpackage's ``steps`` module). ``run_rule`` adapts Snakemake's objects to that and
sends logging (and tqdm progress) to the rule's log file.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("repshift")

STEPS: dict[str, Callable[..., Any]] = {}
# The subpackages whose ``steps`` module holds rule entry points, in pipeline order.
STEP_MODULES = ("demo", "data", "models", "sae", "probes", "steering", "figures")


def step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a workflow step under its function name (``repshift step NAME`` and the rule scripts)."""
    STEPS[fn.__name__] = fn
    return fn


def all_steps() -> dict[str, Callable[..., Any]]:
    """Every registered step (imports each subpackage's ``steps`` module)."""
    for sub in STEP_MODULES:
        importlib.import_module(f"repshift.{sub}.steps")
    return STEPS


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


def configure_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Everything to ``log_file`` when given (progress bars too), only warnings to stderr; else all to stderr."""
    console = logging.StreamHandler(sys.__stderr__)
    console.setLevel(logging.WARNING if log_file else level)
    if log_file:
        console.addFilter(_not_file_only)  # a failure's traceback goes to the log only
    handlers: list[logging.Handler] = [console]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        # a fresh log per run, then appends only: run_step's stderr (progress bars) appends to the same file,
        # and a handler writing at its own offset (mode "w") would overwrite them
        Path(log_file).write_text("")
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    for noisy in ("urllib3", "filelock", "matplotlib", "PIL", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _plain(namedlist: Any) -> dict[str, Any]:
    """Snakemake Namedlist → dict of its named entries (values kept as given)."""
    out = {}
    for key, value in namedlist.items():
        out[key] = [str(v) for v in value] if isinstance(value, list) else value
    return out


def run_step(
    step: Callable[..., Any],
    *,
    input: Mapping,
    output: Mapping,
    params: Mapping,
    threads: int = 1,
    wildcards: Mapping | None = None,
    log_file: str | None = None,
) -> Any:
    configure_logging(log_file)
    # Threads: BLAS/OpenMP (numpy, scikit-learn, torch) read these when first loaded; torch is not imported here
    # (probe and figure jobs never need it), only told if a caller already has it loaded.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(max(1, int(threads)))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, int(threads)))
    t0 = time.perf_counter()
    log.info("step %s: wildcards=%s", step.__name__, dict(wildcards or {}))
    # progress bars (tqdm writes to sys.stderr) go to the rule's log as well
    stderr = open(log_file, "a", buffering=1, encoding="utf-8") if log_file else None  # noqa: SIM115
    saved = sys.stderr
    try:
        if stderr:
            sys.stderr = stderr
        result = step(
            input=dict(input),
            output=dict(output),
            params=dict(params),
            threads=threads,
            wildcards=dict(wildcards or {}),
        )
    except Exception:
        log.error("step %s failed", step.__name__, exc_info=True, extra={"file_only": bool(log_file)})
        raise
    finally:
        if stderr:
            sys.stderr = saved
            stderr.close()
    log.info("step %s done in %.1f s", step.__name__, time.perf_counter() - t0)
    return result


def run_rule(smk: Any, step: Callable[..., Any]) -> Any:
    """Entry point of every workflow script: ``run_rule(snakemake, extract_activations)``.

    A failing step prints one short message (the error and where the full traceback is) and exits with status
    1; the traceback goes to the rule's log only, so a hub or config error is read once, not inside 200 lines.
    """
    log_file = smk.log[0] if len(smk.log) else None
    try:
        return run_step(
            step,
            input=_plain(smk.input),
            output=_plain(smk.output),
            params=_plain(smk.params),
            threads=smk.threads,
            wildcards=_plain(smk.wildcards),
            log_file=log_file,
        )
    except Exception as err:
        if not log_file:
            raise
        print(
            f"repshift: {step.__name__} failed: {type(err).__name__}: {err}\n(full traceback in {log_file})",
            file=sys.__stderr__,
        )
        raise SystemExit(1) from None
