"""Atomic outputs: write to a temporary sibling, rename into place only when complete.

An interrupted job never leaves a file (or directory) at the final path that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _clear_stale(final: Path, pattern: str) -> None:
    """Remove temporaries a killed earlier attempt left beside ``final`` (SIGKILL skips every cleanup).

    Only one job at a time produces a given output, so a sibling of this form is never still in use.
    """
    for stale in final.parent.glob(pattern):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(path, f".{path.name}.*.tmp{suffix}")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the final suffix (``.x.h5.<rand>.tmp.h5``) so that libraries which look at
    the extension (h5py, matplotlib, pandas) behave as for the final file.
    """
    final = Path(path)
    tmp = _tmp_sibling(final, suffix=final.suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fresh_tmpdir(final: Path, suffix: str) -> Path:
    """A new hidden temporary folder beside ``final`` (``suffix`` names its kind), after clearing those of that
    kind a killed earlier attempt left."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(final, f".{final.name}.*{suffix}")
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``path``; move it onto ``path`` if the block succeeds."""
    final = Path(path)
    tmp = _fresh_tmpdir(final, ".tmpdir")
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def scratch_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``path``, removed afterwards whatever happens.

    For work that is moved into place piece by piece (the caller renames out of it); temporaries a killed
    earlier attempt left are cleared first, as for :func:`atomic_dir`.
    """
    tmp = _fresh_tmpdir(Path(path), ".scratch")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
