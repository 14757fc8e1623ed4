"""The `payoff` job commands against a live gateway (no runner: jobs stay queued until cancelled)."""

from __future__ import annotations

from gateway.client_cli import cancel_main, jobs_main, keys_main, logs_main, status_main, submit_main
from payoff import cli
from services.jobs import StepEvent, publish_event
from tests.gateway.conftest import ADMIN_KEY, SPEC_YAML


def test_submit_status_jobs_logs_cancel(gateway_server, gw_redis, tmp_path, capsys):
    auth = ["--url", gateway_server.url, "--api-key", ADMIN_KEY]
    assert keys_main(["create", "acme", "--name", "cli", *auth]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    me = ["--url", gateway_server.url, "--api-key", key]
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC_YAML)
    assert submit_main([str(spec), *me]) == 0
    jid = capsys.readouterr().out.split()[1]
    publish_event(gw_redis, StepEvent(job_id=jid, step=1, metrics={"reward_mean": 0.5}))

    assert status_main([jid, *me]) == 0
    out = capsys.readouterr().out
    assert f"job       {jid}" in out and "state     queued" in out and "reward_mean=0.5" in out
    assert "[" in out and "1/2" in out  # progress bar: step 1 of learner.steps 2

    assert jobs_main(me) == 0
    out = capsys.readouterr().out
    assert jid in out and "1 of 1 jobs" in out

    assert logs_main([jid, *me]) == 0  # without --follow: what happened so far
    out = capsys.readouterr().out
    assert "status queued" in out and "step" in out and "reward_mean=0.5" in out

    assert cancel_main([jid, *me]) == 0
    assert f"{jid}: cancelled" in capsys.readouterr().out
    assert logs_main([jid, "--follow", *me]) == 1  # follows to the end; a cancelled job is not a success
    out = capsys.readouterr().out
    assert "status cancelled" in out and out.strip().endswith(f"job {jid} cancelled")

    assert keys_main(["list", *auth]) == 0
    assert "acme" in capsys.readouterr().out


def test_errors_are_readable(gateway_server, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nrollout: {max_response_tokens: 8}\nasynchrony: {window_tokens: 64}\nlearner: {stepz: 3}\n"
    )
    assert submit_main([str(bad), "--url", gateway_server.url, "--api-key", ADMIN_KEY]) == 1
    err = capsys.readouterr().err
    assert "learner.stepz: unknown field" in err
    assert status_main(["nope", "--url", gateway_server.url, "--api-key", ADMIN_KEY]) == 1
    assert "job 'nope' not found" in capsys.readouterr().err
    assert status_main(["x", "--url", "http://127.0.0.1:9", "--api-key", "k"]) == 1
    assert "cannot reach the gateway" in capsys.readouterr().err
    assert jobs_main(["--url", gateway_server.url, "--api-key", ""]) == 1
    assert "no API key" in capsys.readouterr().err


def test_payoff_dispatches_job_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("serve", "submit", "jobs", "status", "logs", "cancel", "keys"):
        assert f"  {name} " in out
