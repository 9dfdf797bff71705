"""Atomic outputs: nothing at the final path unless complete; leftovers of killed attempts are cleared."""

import os

import pytest

from repshift.formats.atomic import atomic_dir, atomic_path, scratch_dir


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    out = tmp_path / "acts"
    with atomic_dir(out) as tmp:
        (tmp / "layer-0.h5").write_text("ok")
        assert not out.exists()
    assert (out / "layer-0.h5").read_text() == "ok"


def test_leftovers_of_a_killed_attempt_are_cleared(tmp_path):
    (tmp_path / ".acts.abc123.tmpdir").mkdir()
    (tmp_path / ".x.h5.q1w2.tmp.h5").write_text("partial")
    (tmp_path / ".other.zz.tmpdir").mkdir()
    with atomic_dir(tmp_path / "acts") as tmp:
        (tmp / "f").write_text("ok")
    with atomic_path(tmp_path / "x.h5") as tmp:
        tmp.write_text("ok")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".other.zz.tmpdir", "acts", "x.h5"]


def test_scratch_dir_is_removed_whatever_happens(tmp_path):
    (tmp_path / ".out.abc.scratch").mkdir()  # left by a killed attempt
    with scratch_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("a")
        os.replace(tmp / "a", tmp_path / "a")
    with pytest.raises(RuntimeError), scratch_dir(tmp_path / "out") as tmp:
        (tmp / "b").write_text("b")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
