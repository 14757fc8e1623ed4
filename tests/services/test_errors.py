"""services.errors: the one-line reason a failed job part reports."""

from __future__ import annotations

import redis

from services.errors import reason, root_cause

RAY_TRAIN = """Training failed due to worker errors:
[Rank 0 Error Snippet]:
Traceback (most recent call last):
  File "/x/learner/trainer.py", line 200, in run
    batch = self._next_batch()
  File "/x/learner/stall.py", line 80, in check
    raise LearnerError(msg)
learner.stall.LearnerError: no trainable trajectory for 300 s (120 stale, 0 dead-lettered)
"""


def test_root_cause_is_the_innermost_error_line_without_its_module():
    assert (
        root_cause(RAY_TRAIN)
        == "LearnerError: no trainable trajectory for 300 s (120 stale, 0 dead-lettered)"
    )
    assert root_cause("nothing here") is None


def test_reason_of_a_wrapped_traceback_is_one_line_with_a_prefix():
    out = reason(RuntimeError(RAY_TRAIN), prefix="training failed: ")
    assert (
        out == "training failed: LearnerError: no trainable trajectory for 300 s (120 stale, 0 dead-lettered)"
    )


def test_redis_errors_say_what_to_check():
    out = reason(redis.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused."))
    assert out.startswith("ConnectionError: Error 111") and "PAYOFF_REDIS_RIDE_OUT_S" in out
    wrapped = reason(RuntimeError("Traceback:\nredis.exceptions.ConnectionError: Error 111 connecting"))
    assert "PAYOFF_REDIS_RIDE_OUT_S" in wrapped


def test_plain_errors_keep_type_and_message_and_are_bounded():
    assert reason(ValueError("bad")) == "ValueError: bad"
    assert len(reason(ValueError("x" * 5000))) == 2000
