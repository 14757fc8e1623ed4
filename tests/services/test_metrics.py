"""The shared metrics registry: per-job series can be forgotten once a job has ended."""

from __future__ import annotations


def test_forget_job_removes_only_that_jobs_series():
    from services import metrics

    metrics.QUEUE_DEPTH.labels("forget-a").set(3)
    metrics.QUEUE_PUT.labels("forget-a").inc()
    metrics.QUEUE_DEPTH.labels("forget-b").set(1)
    assert metrics.forget_job("forget-a") >= 2
    text = metrics.render().decode()
    assert 'job="forget-a"' not in text and 'job="forget-b"' in text
    assert metrics.forget_job("forget-a") == 0
