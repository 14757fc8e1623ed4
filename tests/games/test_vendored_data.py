"""The project carries its data sets: every file data/MANIFEST.sha256 lists is there with that checksum,
every file in data/gtalign and data/grl is listed, each folder has its licence, the loaders default to this
folder, and no code of the project refers to a `shared` folder outside the repository at run time."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from games.data import VENDORED, shared_data_dir

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
PACKAGES = ("services", "games", "rollout", "judge", "learner", "orchestrator", "gateway", "payoff", "bench")


def manifest() -> dict[str, str]:
    lines = (DATA / "MANIFEST.sha256").read_text().splitlines()
    return {
        name.strip(): digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())
    }


def test_every_vendored_file_matches_its_checksum_and_is_listed():
    listed = manifest()
    assert len(listed) >= 15
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, f"{name} changed"
    present = {str(p.relative_to(DATA)) for d in ("gtalign", "grl") for p in (DATA / d).iterdir()}
    assert present == set(listed), present ^ set(listed)
    assert any(n.startswith("gtalign/LICENSE") for n in listed) and any(
        n.startswith("grl/LICENSE") for n in listed
    )


def test_loaders_default_to_the_vendored_folder(monkeypatch):
    monkeypatch.delenv("PAYOFF_DATASETS", raising=False)
    monkeypatch.delenv("PAYOFF_SHARED_DATA", raising=False)
    assert shared_data_dir() == VENDORED == DATA


def test_no_run_time_code_reads_a_shared_folder_outside_the_repository():
    bad = re.compile(r"""["'/]\.\./shared|parents\[\d\]\.parent\s*/\s*["']shared""")
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if bad.search(line)
    ]
    assert not hits, hits
