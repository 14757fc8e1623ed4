"""SGLang judge: Qwen/Qwen3-32B by default, behind SGLang's OpenAI-compatible server (spec §1.5).

Either an external server (`url`) or one this engine launches and owns: `python -m sglang.launch_server`
as a child process with the configured tensor/data parallelism and Qwen3 reasoning parser, polled on
/health until ready and stopped with the engine. sglang is a GPU-only package: this module never imports
it; only a launch checks that the launcher module is installed. Requests go through OpenAICompatEngine.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from judge.config import JudgeConfig, SGLangConfig
from judge.engines.openai_compat import OpenAICompatEngine


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def launch_command(model: str, cfg: SGLangConfig, port: int, python: str = sys.executable) -> list[str]:
    """The launch_server command line for this config (tp·dp GPUs in one server process)."""
    cmd = [
        python,
        "-m",
        cfg.launcher,
        "--model-path",
        model,
        "--host",
        cfg.host,
        "--port",
        str(port),
        "--tp",
        str(cfg.tp),
        "--dp",
        str(cfg.dp),
    ]
    if cfg.reasoning_parser:
        cmd += ["--reasoning-parser", cfg.reasoning_parser]
    if cfg.mem_fraction_static is not None:
        cmd += ["--mem-fraction-static", str(cfg.mem_fraction_static)]
    if cfg.context_length is not None:
        cmd += ["--context-length", str(cfg.context_length)]
    return cmd + list(cfg.extra_args)


class SGLangServer:
    """A launch_server child process (`cfg.launcher`: SGLang's module unless a test swaps in its own)."""

    def __init__(self, model: str, cfg: SGLangConfig) -> None:
        self.model, self.cfg, self.launcher = model, cfg, cfg.launcher
        self.port = cfg.port or free_port(cfg.host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"payoff-sglang-{os.getpid()}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    def start(self) -> SGLangServer:
        root = self.launcher.split(".", 1)[0]
        if importlib.util.find_spec(root) is None:
            raise RuntimeError(
                f"cannot launch {self.launcher}: the '{root}' package is not installed "
                f"(SGLang needs a GPU image; or pass judge url= for an external server)"
            )
        cmd = launch_command(self.model, self.cfg, self.port)
        with open(self.log_path, "wb") as log:
            # own process group, so stop() also ends the server's TP/DP worker processes
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.launcher} exited with {self.proc.returncode}: {self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(
            f"{self.launcher} not ready after {self.cfg.startup_timeout_s}s: {self.log_tail()}"
        )

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
        except ProcessLookupError:
            pass


class SGLangEngine(OpenAICompatEngine):
    backend = "sglang"

    def __init__(self, config: JudgeConfig) -> None:
        self.server: SGLangServer | None = None
        base_url = config.url
        if base_url is None:
            self.server = SGLangServer(config.model or "Qwen/Qwen3-32B", config.sglang).start()
            base_url = f"{self.server.url}/v1"
        try:
            super().__init__(config, base_url=base_url)
        except Exception:
            if self.server is not None:
                self.server.stop()
            raise

    def close(self) -> None:
        super().close()
        if self.server is not None:
            self.server.stop()
