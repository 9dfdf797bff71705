"""Rule entry point: a failing step is reported once, in one message, with the traceback kept in the log."""

import pytest
from snakemake.iocontainers import Namedlist

from repshift.runtime import run_rule


class _Smk:
    def __init__(self, log_file):
        self.input = Namedlist(fromdict={})
        self.output = Namedlist(fromdict={})
        self.params = Namedlist(fromdict={"x": 1})
        self.wildcards = Namedlist(fromdict={})
        self.threads = 1
        self.log = Namedlist([str(log_file)] if log_file else [])


def _failing_step(*, input, output, params, **_):
    raise RuntimeError(
        "could not load model demo-llm from 'google/gemma-2-2b': no network\nThe real preset needs …"
    )


def test_failure_prints_one_message_and_keeps_the_traceback_in_the_log(tmp_path, capfd):
    log_file = tmp_path / "logs" / "rule.log"
    with pytest.raises(SystemExit) as exc:
        run_rule(_Smk(log_file), _failing_step)
    assert exc.value.code == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.count("could not load model demo-llm") == 1
    assert f"(full traceback in {log_file})" in err
    text = log_file.read_text()
    assert "Traceback" in text and "RuntimeError: could not load model demo-llm" in text


def test_without_a_log_the_exception_propagates(capfd):
    with pytest.raises(RuntimeError, match="could not load model"):
        run_rule(_Smk(None), _failing_step)


def _step_with_progress(*, input, output, params, **_):
    import logging

    from repshift.progress import progress

    for _ in progress(range(3), desc="fitting", unit="fit"):
        logging.getLogger("repshift.test").info("one fit done")


def test_progress_and_log_lines_share_the_log_and_a_rerun_starts_it_afresh(tmp_path):
    log_file = tmp_path / "rule.log"
    log_file.write_text("left from an earlier run\n")
    run_rule(_Smk(log_file), _step_with_progress)
    text = log_file.read_text()
    assert "left from an earlier run" not in text
    assert "fitting: 100%" in text and "3/3 [" in text  # not overwritten by the log lines
    assert text.count("one fit done") == 3 and "step _step_with_progress done" in text
