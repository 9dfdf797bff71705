"""repshift.progress: bars go to the current stderr, plain and sparse when it is a file."""

from __future__ import annotations

import io
import sys

from repshift import progress as progress_mod


def test_bar_in_a_file_is_plain_and_sparse(monkeypatch):
    log = io.StringIO()  # not a terminal, like a rule's log
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_mod.progress(range(4), desc="encode_sae", unit="layer")
    assert bar.mininterval == progress_mod.FILE_MININTERVAL and bar.ascii
    assert list(bar) == [0, 1, 2, 3]
    bar.close()
    assert "encode_sae: 100%" in log.getvalue() and "4/4 [" in log.getvalue()


def test_no_bar_for_a_loop_below_min_steps(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert list(progress_mod.progress([7], desc="sae.encode", min_steps=2)) == [7]
    assert log.getvalue() == ""
