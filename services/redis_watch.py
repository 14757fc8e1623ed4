"""Keep the project's own redis-server up: `payoff serve` and LocalStack restart it when it dies.

Invariant: the restarted server uses the same port and AOF dir, so every client (gateway, learner, job
driver, replicas) reconnects to the same data; the data plane rides the gap out
(services/config.data_plane_client) and the gateway answers 503 meanwhile. A server that keeps dying
(`max_restarts` within `window_s`) is left down with an error naming its log, never restarted in a tight
loop. An external Redis (REDIS_URL) is not ours to restart and is not watched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from services.redis_server import RedisServer, RedisServerError

log = logging.getLogger(__name__)


class RedisSupervisor:
    def __init__(
        self, server: RedisServer, check_s: float = 1.0, max_restarts: int = 5, window_s: float = 300.0
    ):
        self.server, self.check_s = server, check_s
        self.max_restarts, self.window_s = max_restarts, window_s
        self.restarts: deque[float] = deque()
        self.gave_up: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-supervisor", daemon=True)

    def start(self) -> RedisSupervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (before stopping the server on purpose)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.check_s + 30)

    def _run(self) -> None:
        while not self._stop.wait(self.check_s):
            proc = self.server.proc
            if proc is None or proc.poll() is None:
                continue
            now = time.monotonic()
            while self.restarts and now - self.restarts[0] > self.window_s:
                self.restarts.popleft()
            if len(self.restarts) >= self.max_restarts:
                self.gave_up = (
                    f"redis-server died {len(self.restarts) + 1} times in {self.window_s:.0f} s; not "
                    f"restarting it again: see {self.server.log_path}"
                )
                log.error("%s", self.gave_up)
                return
            self.restarts.append(now)
            log.warning(
                "redis-server (pid %s, port %s) exited with %s: restarting it on the same AOF dir %s",
                proc.pid,
                self.server.port,
                proc.returncode,
                self.server.data_dir,
            )
            try:
                self.server.kill()  # reap and release the lock of the dead one
                self.server.start()
                log.warning(
                    "redis-server is back on port %s (pid %s)", self.server.port, self.server.proc.pid
                )
            except (RedisServerError, OSError) as e:
                log.error("could not restart redis-server: %s", e)
