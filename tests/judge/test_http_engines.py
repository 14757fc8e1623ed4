"""OpenAI-compatible and SGLang engines against real HTTP servers on loopback: a scripted server for
timeouts / retries / bad replies, and our OpenAI-compatible server over a real transformers model."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from judge import metrics
from judge.config import JudgeConfig
from judge.engines import make_engine
from judge.engines.openai_compat import OpenAICompatEngine
from judge.engines.sglang import SGLangServer, launch_command
from judge.gtalign import GTAlignSample, GTAlignScorer
from judge.parsers import split_reasoning
from judge.types import JudgeItem
from tests.judge.conftest import WORKED_EXAMPLE

REPO = Path(__file__).resolve().parents[2]
ACCURACY = JudgeItem("accuracy", question="1+1?", response="\\boxed{2}", ground_truth="2")


def reply(content: str) -> bytes:
    message = {"role": "assistant", "content": content}
    return json.dumps({"choices": [{"index": 0, "message": message}]}).encode()


class Scripted(BaseHTTPRequestHandler):
    """/<mode>/v1/chat/completions: slow (sleeps past the client timeout), flaky (503 twice, then ok),
    bad (400), garbage (200 with a non-JSON body), ok (a verdict inside and after a <think> block)."""

    calls: dict[str, int] = {}
    auth: list[str] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        mode = self.path.strip("/").split("/")[0]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Scripted.calls[mode] = Scripted.calls.get(mode, 0) + 1
        Scripted.auth.append(self.headers.get("Authorization", ""))
        status, body = 200, reply("<think>Reference says 2. \\boxed{0}?</think>\n\nCorrect. \\boxed{1}")
        if mode == "slow":
            time.sleep(1.5)
        elif mode == "flaky" and Scripted.calls[mode] <= 2:
            status, body = 503, b'{"error": "overloaded"}'
        elif mode == "bad":
            status, body = 400, b'{"error": "bad request"}'
        elif mode == "garbage":
            body = b"<html>not json</html>"
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left


@pytest.fixture(scope="module")
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def http_config(url: str, **kw) -> JudgeConfig:
    kw.setdefault("timeout_s", 0.3)
    kw.setdefault("max_retries", 1)
    kw.setdefault("backoff_s", 0.05)
    kw.setdefault("job", "test-http")
    return JudgeConfig(backend="openai", url=url, **kw)


def test_verdict_after_think_block(scripted, monkeypatch) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    with make_engine(http_config(f"{scripted}/ok/v1", api_key_env="TEST_JUDGE_KEY")) as engine:
        v = engine.judge([ACCURACY])[0]
    assert v.ok and v.value == 1.0  # the \boxed{0} inside <think> does not count
    assert Scripted.auth[-1] == "Bearer sk-test"


def test_judge_that_times_out(scripted) -> None:
    """Every attempt exceeds the timeout: the verdict fails as a timeout, the sample's judge score is 0,
    the rest of the batch is scored, and the failure is counted."""
    before = metrics.failures("test-http", "openai", "timeout")
    retries = (
        metrics.REGISTRY.get_sample_value(
            "payoff_judge_retries_total", {"job": "test-http", "backend": "openai"}
        )
        or 0.0
    )
    calls = Scripted.calls.get("slow", 0)
    t0 = time.perf_counter()
    with make_engine(http_config(f"{scripted}/slow/v1", parse_retries=2)) as engine:
        out = GTAlignScorer(engine, job="test-http").score(
            [
                GTAlignSample("math-hard", WORKED_EXAMPLE, "2"),
                GTAlignSample("math-hard", WORKED_EXAMPLE, "2", judge=1.0),
            ]
        )
    elapsed = time.perf_counter() - t0
    assert out[0].scored and out[0].judge == 0.0 and out[0].error.startswith("timeout")
    assert out[0].score == pytest.approx(0.270793, abs=1e-6)
    assert out[1].score == pytest.approx(0.732956, abs=1e-6)
    assert Scripted.calls["slow"] - calls == 2  # first attempt + one retry; a timeout is not re-asked
    assert metrics.failures("test-http", "openai", "timeout") == before + 1
    assert (
        metrics.REGISTRY.get_sample_value(
            "payoff_judge_retries_total", {"job": "test-http", "backend": "openai"}
        )
        == retries + 1
    )
    assert elapsed < 1.5  # 2 × 0.3 s timeouts + 0.05 s back-off, not the server's 1.5 s


def test_retry_after_overload(scripted) -> None:
    with make_engine(http_config(f"{scripted}/flaky/v1", max_retries=3, timeout_s=5)) as engine:
        v = engine.judge([ACCURACY])[0]
    assert v.ok and v.value == 1.0 and Scripted.calls["flaky"] == 3


@pytest.mark.parametrize(("mode", "reason"), [("bad", "http"), ("garbage", "bad_response")])
def test_permanent_errors_are_not_retried(scripted, mode, reason) -> None:
    calls = Scripted.calls.get(mode, 0)
    before = metrics.failures("test-http", "openai", reason)
    with make_engine(http_config(f"{scripted}/{mode}/v1", max_retries=3, timeout_s=5)) as engine:
        v = engine.judge([ACCURACY])[0]
    assert not v.ok and v.error.startswith(reason)
    assert Scripted.calls[mode] - calls == 1
    assert metrics.failures("test-http", "openai", reason) == before + 1


# ---- a real model behind our OpenAI-compatible server -----------------------------------------------
def test_openai_engine_against_model_server(model_server) -> None:
    """Replies carry a Qwen3-style <think> block in content: the engine returns the visible part only."""
    cfg = http_config(
        f"{model_server.url}/v1",
        timeout_s=60,
        max_retries=0,
        parse_retries=0,
        sampling={"max_tokens": 16, "temperature": 0.0, "top_k": 20, "enable_thinking": True},
    )
    prompt = "What is 1+1? Answer with \\boxed{}."
    with make_engine(cfg) as engine:
        completions = engine.complete([prompt, prompt, "Say hi."])
        verdicts = engine.judge([ACCURACY] * 3)
    raw = httpx.post(
        f"{model_server.url}/v1/chat/completions",
        timeout=60,
        json={"messages": [{"role": "user", "content": prompt}], "max_tokens": 16, "temperature": 0.0},
    ).json()
    content = raw["choices"][0]["message"]["content"]
    assert content.startswith("<think>") and "</think>" in content
    assert (completions[0].reasoning, completions[0].text) == split_reasoning(content)
    assert completions[0] == completions[1]  # greedy, concurrent requests
    assert all("<think>" not in c.text and c.error is None for c in completions)
    # a random tiny model writes no verdict: parse failures, never an exception
    assert all(not v.ok and v.error.startswith("parse") for v in verdicts)


def test_sglang_engine_external_url_with_reasoning_parser(parser_server) -> None:
    """backend sglang + url: SGLang's defaults (top_k, enable_thinking) against a server that returns
    the thinking in reasoning_content, as `--reasoning-parser qwen3` does."""
    cfg = JudgeConfig(
        backend="sglang",
        url=f"{parser_server.url}/v1",
        job="test-http",
        parse_retries=0,
        sampling={"max_tokens": 16},
    )
    with make_engine(cfg) as engine:
        assert engine.backend == "sglang" and engine.server is None
        c = engine.complete(["Is the sky blue?"])[0]
    assert c.error is None and c.reasoning and "<think>" not in c.text


def test_label_logprobs_over_http(parser_server) -> None:
    """top_logprobs from the server: when a label token shows up among them, its probability is read."""
    with make_engine(http_config(f"{parser_server.url}/v1", timeout_s=60)) as engine:
        lp = engine._label_logprobs_one("Reply with one letter.", ["a", "b"], "")
    assert lp is None or (set(lp) <= {"a", "b"} and all(v <= 0 for v in lp.values()))


@pytest.mark.slow
def test_soft_preference_over_http_matches_in_process(tmp_path) -> None:
    """SmolLM2 behind the server answers "Output (a…": the label probabilities read from top_logprobs
    equal those of the in-process transformers engine with the same prompt and prefix."""
    from tests.judge.openai_server import ServerThread, create_app

    item = JudgeItem(
        "preference",
        question="What is the capital of France?",
        response="The capital of France is Paris.",
        other="The capital of France is London.",
    )
    local = make_engine(JudgeConfig(backend="transformers", model="smollm2-135m", job="test-http"))
    expected = local.label_probs([item], ("a", "b"), "Output (")[0]
    with ServerThread(create_app("smollm2-135m", think=False)) as server:
        engine = make_engine(http_config(f"{server.url}/v1", timeout_s=120))
        got = engine.label_probs([item], ("a", "b"), "Output (")[0]
    assert expected is not None and got is not None
    assert got["a"] == pytest.approx(expected["a"], abs=2e-3) and got["a"] + got["b"] == pytest.approx(1.0)


# ---- SGLang launch management ---------------------------------------------------------------------
def test_sglang_is_never_imported() -> None:
    import judge.engines.sglang  # noqa: F401
    import judge.serve  # noqa: F401

    assert "sglang" not in sys.modules


def test_launch_command_and_missing_package() -> None:
    cfg = JudgeConfig(
        backend="sglang",
        sglang={"tp": 4, "dp": 2, "mem_fraction_static": 0.8, "extra_args": ["--trust-remote-code"]},
    )
    cmd = launch_command("Qwen/Qwen3-32B", cfg.sglang, 30000, python="python")
    assert cmd == [
        "python",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "Qwen/Qwen3-32B",
        "--host",
        "127.0.0.1",
        "--port",
        "30000",
        "--tp",
        "4",
        "--dp",
        "2",
        "--reasoning-parser",
        "qwen3",
        "--mem-fraction-static",
        "0.8",
        "--trust-remote-code",
    ]
    assert cfg.replica_gpus() == 8.0
    if "sglang" not in sys.modules and not __import__("importlib").util.find_spec("sglang"):
        with pytest.raises(RuntimeError, match="not installed"):
            SGLangServer("Qwen/Qwen3-32B", cfg.sglang).start()


@pytest.mark.slow
def test_managed_server_lifecycle(tiny_model_path, monkeypatch) -> None:
    """The engine launches the server module as a child with SGLang's flags, waits for /health, judges
    through it and stops it on close (our OpenAI-compatible server stands in for sglang.launch_server)."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    cfg = JudgeConfig(
        backend="sglang",
        model=tiny_model_path,
        job="test-http",
        parse_retries=0,
        sampling={"max_tokens": 8},
        sglang={"launcher": "tests.judge.openai_server", "tp": 1, "dp": 1, "startup_timeout_s": 120},
    )
    engine = make_engine(cfg)
    proc = engine.server.proc
    try:
        assert proc.poll() is None
        v = engine.judge([ACCURACY, ACCURACY])
        assert all(x.error.startswith("parse") for x in v)
        assert OpenAICompatEngine.complete(engine, ["hello"])[0].error is None
    finally:
        engine.close()
    assert proc.poll() is not None
