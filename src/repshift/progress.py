"""Progress bars of long loops, written where a rule's stderr goes (its log, under :func:`repshift.runtime.run_step`).

On a terminal a bar refreshes every second; into a file (a rule's log) every 30 seconds, so that a job of hours
writes a line per half-minute rather than thousands, and always a first and a last line. ``TQDM_DISABLE=1``
(tqdm's own environment override) silences every bar.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: seconds between refreshes of a bar written into a file rather than a terminal
FILE_MININTERVAL = 30.0


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    unit: str = "it",
    total: int | None = None,
    min_steps: int = 1,
    **kw: Any,
) -> tqdm:
    """``tqdm(iterable)`` on the current ``sys.stderr`` (read at call time, so a redirected log is used);
    no bar for a loop of fewer than ``min_steps`` steps."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if total is not None and total < min_steps:
        kw["disable"] = True
    stream = sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    kw.setdefault("mininterval", 1.0 if tty else FILE_MININTERVAL)
    kw.setdefault("ascii", not tty)  # plain characters in a log file
    return tqdm(iterable, desc=desc, unit=unit, total=total, file=stream, dynamic_ncols=tty, **kw)
