"""Rewards from the judge deployment for games that need one, as an EpisodeRunner `scorer`.

Talks to the judge only through the services/judge_api.py contract (a Serve handle by app name), so
rollout never imports judge internals. A judge failure scores 0 and is reported in the episode's info
(the judge counts it in its metrics); it never fails the episode.
"""

from __future__ import annotations

import logging

from services.judge_api import GTAlignItem, ScoreRequest
from services.schemas import Episode

log = logging.getLogger(__name__)


class JudgeScorer:
    """GTAlign: the judge's welfare score for each episode whose four blocks parsed."""

    def __init__(self, judge, welfare: str = "cobb_douglas", variant: str = "main", timeout_s: float = 600.0):
        """`judge`: a JudgeClient, or the judge's Serve app name (connected on first use, so a judge that
        is not up yet is an error of that call, not of the rollout replica)."""
        self._judge, self.welfare, self.variant, self.timeout_s = judge, welfare, variant, timeout_s

    @property
    def client(self):
        if isinstance(self._judge, str):
            from services.judge_api import JudgeClient

            self._judge = JudgeClient(app_name=self._judge, timeout_s=self.timeout_s)
        return self._judge

    def __call__(self, episodes: list[Episode]) -> list[dict[str, float]]:
        out: list[dict[str, float]] = [{} for _ in episodes]
        todo = [
            (i, ep)
            for i, ep in enumerate(episodes)
            if ep.env == "gtalign" and ep.turns and ep.turns[-1].info.get("needs_judge")
        ]
        if not todo:
            return out
        items = [
            GTAlignItem(
                data_source=ep.data_source or "math-hard",
                output=ep.turns[-1].content,
                ground_truth=ep.ground_truth or "",
                question=str(ep.info.get("observation", "")),
                variant=self.variant,
            )
            for _, ep in todo
        ]
        try:
            results = self.client.score(ScoreRequest(items=items, welfare=self.welfare)).results
        except Exception as e:  # judge down: score 0, keep the episodes, say why
            log.error("judge call failed for %d episodes: %s", len(items), e)
            for _, ep in todo:
                ep.info["judge_error"] = f"{type(e).__name__}: {e}"[:300]
            return out
        for (i, ep), res in zip(todo, results):
            role = ep.turns[-1].role
            out[i][role] = float(res.score)
            ep.info.update(judge_user=res.user, judge_llm=res.llm, judge_format=res.format)
            if res.error:
                ep.info["judge_error"] = res.error[:300]
        return out
