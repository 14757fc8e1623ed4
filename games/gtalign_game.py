"""GTAlign's dialogue game (spec §1): one turn in which the assistant writes the four blocks
<thinking><payoff><analyze><response>.

The reward comes from the judge, so the game only parses and validates: `info` carries the parsed blocks,
the payoff matrix, its Pareto frontier and recommended action, and the episode's data_source and ground
truth for the judge. A sample whose response/payoff cannot be extracted is final with reward 0 (the
spec's outcome for it) and `needs_judge=False`; otherwise `needs_judge=True` and the judge's welfare
replaces the 0 reward (see games.gtalign_reward.utilities).
"""

from __future__ import annotations

from pathlib import Path

from games.base import StepResult, TextGame, make_info
from games.data import GTAlignRecord, load_gtalign
from games.parsing import parse_four_blocks
from games.payoff import PayoffMatrix


class GTAlignGame(TextGame):
    name = "gtalign"
    roles = ("assistant",)

    def __init__(self, records: list[GTAlignRecord]) -> None:
        super().__init__()
        if not records:
            raise ValueError("GTAlignGame needs at least one record")
        self.records = records
        self.record = records[0]

    @classmethod
    def from_parquet(cls, name_or_path: str | Path = "math-hard", limit: int | None = None) -> GTAlignGame:
        return cls(load_gtalign(name_or_path, limit=limit))

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat to send to the policy (system + user)."""
        return [dict(m) for m in self.record.messages]

    def _reset(self, seed: int) -> dict[str, str]:
        self.record = self.records[seed % len(self.records)]
        return self._observations()

    def observe(self, role: str = "assistant") -> str:
        return self.record.user_prompt

    def _step(self, text: str) -> StepResult:
        parsed = parse_four_blocks(text)
        rec = self.record
        fields: dict[str, object] = {
            "data_source": rec.data_source,
            "ground_truth": rec.ground_truth,
            "question": rec.question,
            "index": rec.index,
            "fmt": parsed.fmt,
            "needs_judge": parsed.ok,
        }
        if not parsed.ok or parsed.payoff is None:
            info = make_info("assistant", invalid_action=True, error=parsed.error) | fields
            return StepResult({"assistant": ""}, 0.0, True, info)
        matrix = PayoffMatrix(parsed.payoff)
        info = make_info(
            "assistant",
            invalid_action=False,
            actions=[matrix.recommend()],
            response=parsed.response,
            analyze=parsed.analyze,
            thinking=parsed.thinking,
            reasoning=parsed.reasoning,
            payoff=matrix.to_json(),
            payoff_reward=matrix.asymmetry_reward(),
            pareto_frontier=matrix.pareto_frontier(),
            recommended=matrix.recommend(),
        )
        info.update(fields)
        return StepResult({"assistant": ""}, 0.0, True, info)
