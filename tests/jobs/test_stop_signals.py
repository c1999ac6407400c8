"""`jobs/signals.py` without Ray: a stop signal becomes `Interrupted` whatever the inherited disposition, a second
one during the shutdown does not interrupt it, and the runner names the stage it stopped."""

import os
import signal

import pytest

from jobs.signals import Interrupted, stop_on_signals


def test_sigint_raises_even_when_the_process_inherited_it_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts `cmd &`
    try:
        with pytest.raises(Interrupted) as caught, stop_on_signals():
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0)  # a point where Python runs the handler
        assert caught.value.exit_code == 130 and str(caught.value) == "stopped by SIGINT"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back on the way out
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_second_signal_during_the_shutdown_only_logs(caplog):
    cleaned_up = False
    with pytest.raises(Interrupted) as caught, stop_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the impatient second one, mid-cleanup
            signal.sigtimedwait([], 0)
            cleaned_up = True
    assert cleaned_up and caught.value.exit_code == 143
    assert "received while stopping" in caplog.text


def test_the_runner_names_the_interrupted_stage(tmp_path, monkeypatch):
    from jobs import job_types, runner
    from jobs.stage import StageEnv

    def stopped(_job, _env):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setitem(job_types.JOB_TYPES, "generate", stopped)
    job = type("Job", (), {"job_type": "generate"})()
    with pytest.raises(Interrupted) as caught:
        runner._run_stage(job, StageEnv("generate", tmp_path, tmp_path / "rejected", None))
    assert str(caught.value) == "stage 'generate' interrupted by SIGTERM; completed parts kept, re-run to resume"
