"""Run each rule script exactly as Snakemake would, on tiny inputs, without Snakemake.

``run_script`` executes ``workflow_scripts/<rule>.py`` with a ``snakemake`` object carrying named input,
output, params, wildcards, log and threads (the attributes the scripts use).
"""

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class _Named(dict):
    """Enough of Snakemake's Namedlist: items() and attribute access."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err


class FakeSnakemake:
    def __init__(self, input, output, params, wildcards, log, threads):
        self.input = _Named(input)
        self.output = _Named(output)
        self.params = _Named(params)
        self.wildcards = _Named(wildcards)
        self.log = [str(log)]
        self.threads = threads


def run_script(rule, *, input=None, output=None, params=None, wildcards=None, log=None, threads=1):
    log = log or (Path(next(iter((output or {"x": "/tmp/x"}).values()))).parent / f"{rule}.log")
    smk = FakeSnakemake(input or {}, output or {}, params or {}, wildcards or {}, log, threads)
    runpy.run_path(str(ROOT / "workflow_scripts" / f"{rule}.py"), init_globals={"snakemake": smk})
    return Path(log)


@pytest.fixture(scope="session")
def run():
    return run_script


# --- the demo chain (tests/rules/demo_chain.py), built once per test session ---------------------------------
@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """synthetic COCO -> manifest -> demo models -> activations -> demo SAEs: see demo_chain.build."""
    import demo_chain

    return demo_chain.build(run_script, tmp_path_factory.mktemp("chain"))
