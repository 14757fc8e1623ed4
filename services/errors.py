"""One line a user can act on, from the exception that ended a job's part.

Ray Train wraps a worker's failure in an error whose text is the worker's whole traceback; the job's
status and events carry `reason(e)` instead: the innermost `SomeError: message` line (the root cause),
plus what to do where we know it (Redis gone for longer than the data plane rides out). The full text
still goes to the component's log.
"""

from __future__ import annotations

import re

import redis

MAX_REASON = 2000
_CAUSE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Timeout|Exit))(?::\s*(.*))?$")


def root_cause(text: str) -> str | None:
    """The last `pkg.mod.SomeError: message` line of a traceback text, as `SomeError: message`."""
    found = None
    for line in text.splitlines():
        m = _CAUSE.match(line.strip())
        if m:
            found = f"{m.group(1)}: {m.group(2)}" if m.group(2) else m.group(1)
    return found


def reason(e: BaseException, prefix: str = "") -> str:
    text = str(e)
    cause = root_cause(text) if "\n" in text else None
    line = cause or f"{type(e).__name__}: {text.strip()}"
    if isinstance(e, redis.ConnectionError | redis.TimeoutError) or (
        cause and cause.startswith(("ConnectionError", "TimeoutError")) and "redis" in text.lower()
    ):
        line += (
            " (Redis was unreachable for longer than the data plane waits, PAYOFF_REDIS_RIDE_OUT_S; "
            "check the Redis server and its logs)"
        )
    return f"{prefix}{line}"[:MAX_REASON]
