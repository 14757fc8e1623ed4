"""Data loading: where the shared data sets live, and the GTAlign parquet loader (spec §1.6).

The data root is the project's own vendored folder `<repo>/data` (data/README.md: sources, licences,
checksums), or `$PAYOFF_DATASETS` (same layout; `PAYOFF_SHARED_DATA` is its older name). Loaders accept any
path with the same schema, so full splits and users' own files work too. pyarrow is imported lazily (only the loaders need it).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GTALIGN_SETS = ("math-hard", "ambig_qa", "wildguard", "advbench", "medium", "abg-coqa", "minerva")
# set name (= its data_source) -> file stem under <data>/gtalign/, where they differ
GTALIGN_FILES = {"abg-coqa": "abg_coqa", "minerva": "minerva_math"}
# sets that also have GTAlign's own train split (`<name>.train.parquet`)
GTALIGN_TRAIN_SETS = ("math-hard", "ambig_qa", "wildguard")


VENDORED = Path(__file__).resolve().parents[1] / "data"


def shared_data_dir() -> Path:
    """The data root: $PAYOFF_DATASETS (or its older name $PAYOFF_SHARED_DATA), else the vendored folder."""
    env = os.environ.get("PAYOFF_DATASETS") or os.environ.get("PAYOFF_SHARED_DATA")
    return Path(env) if env else VENDORED


@dataclass(frozen=True)
class GTAlignRecord:
    """One GTAlign prompt row (verl RL layout)."""

    messages: list[dict[str, str]]  # system + user, the user turn already holds the four-block instruction
    data_source: str  # routes to the judge's rubric: math-hard, ambig_qa, wildguard, advbench, ...
    ground_truth: str
    question: str  # extra_info.single_turn_prompt: the bare question, for judges and math checkers
    index: int = 0
    ability: str = ""
    style: str = ""
    extra_info: dict[str, Any] = field(default_factory=dict)
    conv_id: str = ""

    @property
    def user_prompt(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    @property
    def system_prompt(self) -> str:
        return next((m["content"] for m in self.messages if m["role"] == "system"), "")


def gtalign_path(name_or_path: str | Path, split: str = "test") -> Path:
    """A set name from GTALIGN_SETS maps to `<data>/gtalign/<name>.<split>.parquet`; anything else is a
    path (and `split` does not apply to it)."""
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    if str(name_or_path) in GTALIGN_SETS:
        if split == "train" and str(name_or_path) not in GTALIGN_TRAIN_SETS:
            raise ValueError(
                f"{name_or_path} has no train split (sets with one: {', '.join(GTALIGN_TRAIN_SETS)})"
            )
        stem = GTALIGN_FILES.get(str(name_or_path), str(name_or_path))
        return shared_data_dir() / "gtalign" / f"{stem}.{split}.parquet"
    return Path(name_or_path)


def load_gtalign_train(name: str, limit: int | None = None) -> list[GTAlignRecord]:
    """GTAlign's train split of set `name` with every row whose prompt also occurs in its test file removed
    (compared on the last user message, which holds the question), so a model trained on it is evaluated
    on questions it never saw: math-hard loses 394 of 3176 rows (262 distinct questions; 274 of its 353 test
    rows are among them), wildguard 10 of 2700, ambig_qa none. Prompts repeated within the train file stay
    repeated, as GTAlign trains on them. File order; `limit` applies after the removal."""
    if name not in GTALIGN_TRAIN_SETS:
        raise ValueError(f"{name!r} has no train split (sets with one: {', '.join(GTALIGN_TRAIN_SETS)})")
    test, train = gtalign_path(name), gtalign_path(name, "train")
    out = _train_split(str(test), _stamp(test), str(train), _stamp(train))
    return list(out[:limit] if limit is not None else out)


def _stamp(path: Path) -> tuple[int, int] | None:
    st = path.stat() if path.exists() else None
    return (st.st_mtime_ns, st.st_size) if st else None


@functools.lru_cache(maxsize=16)
def _train_split(test: str, _t: object, train: str, _r: object) -> tuple[GTAlignRecord, ...]:
    """Computed once per pair of file versions and process: a rollout builds a game per sequence, and the
    filter over ~3,000 rows cost ~3 ms per game (a tenth of a T-PPO window step on the P1 bench)."""
    seen = {r.user_prompt for r in load_gtalign(test)}
    return tuple(r for r in load_gtalign(train) if r.user_prompt not in seen)


def load_split(
    data: str | Path | None, default: str, split: str | None = None, limit: int | None = None
) -> list[GTAlignRecord]:
    """The records a game trains or evaluates on. `data`: a GTAlign set name (default `default`) or a file
    path. For a set, `split` 'train' is its train file without the test prompts (load_gtalign_train) and
    'test' its test file; unset, a set with a train split trains on it ('train'), the others ('advbench')
    give their test file. A file path is read as it is and takes no split."""
    name = str(data) if data is not None else default
    if name not in GTALIGN_SETS:
        if split is not None:
            raise ValueError(
                f"split applies to the named GTAlign sets ({', '.join(GTALIGN_SETS)}); "
                f"a data file ({name}) is read as it is"
            )
        return load_gtalign(name, limit=limit)
    split = split or ("train" if name in GTALIGN_TRAIN_SETS else "test")
    if split == "train":
        return load_gtalign_train(name, limit=limit)
    if split == "test":
        return load_gtalign(name, limit=limit)
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def load_gtalign(name_or_path: str | Path, limit: int | None = None) -> list[GTAlignRecord]:
    """Read a GTAlign parquet file into records, in file order.

    Parsed once per file version and process: rollouts build a game per sequence, and re-reading the
    parquet each time cost ~10 ms per game. Records are frozen and shared; treat their fields as read-only.
    """
    path = gtalign_path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"GTAlign data not found: {path} (set PAYOFF_DATASETS or pass a path)")
    st = path.stat()
    return list(_parse_gtalign(str(path.resolve()), st.st_mtime_ns, st.st_size, limit))


@functools.lru_cache(maxsize=32)
def _parse_gtalign(path_str: str, mtime_ns: int, size: int, limit: int | None) -> tuple[GTAlignRecord, ...]:
    import pyarrow.parquet as pq

    path = Path(path_str)
    table = pq.read_table(path)
    missing = {"prompt", "data_source", "reward_model"} - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: not a GTAlign/verl parquet, missing columns {sorted(missing)}")
    rows = table.slice(0, limit).to_pylist() if limit is not None else table.to_pylist()
    records = []
    for i, row in enumerate(rows):
        extra = row.get("extra_info") or {}
        reward_model = row.get("reward_model") or {}
        messages = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
        question = extra.get("single_turn_prompt") or ""
        records.append(
            GTAlignRecord(
                messages=messages,
                data_source=str(row["data_source"]),
                ground_truth=str(reward_model.get("ground_truth") or extra.get("ground_truth") or ""),
                question=str(question),
                index=int(extra.get("index", i) if extra.get("index") is not None else i),
                ability=str(row.get("ability") or ""),
                style=str(reward_model.get("style") or ""),
                extra_info=dict(extra),
                conv_id=str(row.get("conv_id", "")),
            )
        )
    return tuple(records)
