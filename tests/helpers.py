"""Small builders shared by tests (real objects, no mocks)."""

from __future__ import annotations

from services.schemas import NOT_GENERATED, Trajectory


def make_trajectory(job_id: str, version: int = 0, n_prompt: int = 4, n_gen: int = 8, **kw) -> Trajectory:
    n = n_prompt + n_gen
    return Trajectory(
        job_id=job_id,
        episode_id=kw.pop("episode_id", "ep"),
        group_id=kw.pop("group_id", "g0"),
        token_ids=list(range(10, 10 + n)),
        logprobs=[0.0] * n_prompt + [-0.5] * n_gen,
        versions=[NOT_GENERATED] * n_prompt + [version] * n_gen,
        loss_mask=[0] * n_prompt + [1] * n_gen,
        rewards=[0.0] * (n - 1) + [1.0],
        prompt_len=n_prompt,
        reward=1.0,
        **kw,
    )


class _Internal:
    """httpx with the deployment's internal token: the data plane's HTTP routes (rollout replicas, judges)
    refuse calls without it (services/internal_auth.py)."""

    @staticmethod
    def post(url, **kw):
        import httpx

        from services.internal_auth import headers

        return httpx.post(url, headers=headers(), **kw)

    @staticmethod
    def get(url, **kw):
        import httpx

        from services.internal_auth import headers

        return httpx.get(url, headers=headers(), **kw)


INTERNAL = _Internal()
