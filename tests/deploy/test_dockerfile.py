"""deploy/Dockerfile cannot be built here (no Docker engine): check that it is consistent with the repository —
both variants exist, every COPY source exists, every file the RUN steps name exists, and the modules its
smoke import names (including the chart's Serve import paths) import."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_variants_and_stages():
    ins = instructions()
    froms = [rest for op, rest in ins if op == "FROM"]
    assert any("-cpu AS base-cpu" in f for f in froms) and any("AS base-cuda" in f for f in froms)
    assert froms[-1] == "base-${VARIANT}"
    args = {rest.split("=")[0] for op, rest in ins if op == "ARG"}
    assert {"VARIANT", "RAY_VERSION"} <= args
    ray_version = next(
        rest.split("=")[1] for op, rest in ins if op == "ARG" and rest.startswith("RAY_VERSION")
    )
    import ray

    assert ray_version == ray.__version__  # the image runs the Ray the code is tested with
    values = yaml.safe_load((ROOT / "helm" / "payoff" / "values.yaml").read_text())
    assert values["ray"]["version"] == ray_version


def test_copy_sources_exist():
    copies = [shlex.split(rest) for op, rest in instructions() if op == "COPY"]
    assert copies
    for parts in copies:
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: missing"
    copied = {parts[0].rstrip("/") for parts in copies}
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pkg in (p.rstrip("*") for p in packages["include"]):  # every package the project installs
        assert pkg in copied, f"package {pkg} not copied into the image"
    assert "data" in copied, "the vendored data sets are not copied into the image"


def test_run_steps_reference_existing_files_and_modules():
    runs = " ".join(rest for op, rest in instructions() if op == "RUN")
    for req in re.findall(r"requirements/[\w.\-]+", runs):
        assert (ROOT / req).exists(), req
    m = re.search(r'python -c "import ([^"]+)"', runs)
    assert m, "the image build should smoke-import the services"
    for mod in (x.strip() for x in m.group(1).split(",")):
        importlib.import_module(mod)
    values = yaml.safe_load((ROOT / "helm" / "payoff" / "values.yaml").read_text())
    for app in values["serve"].values():
        module = app["importPath"].split(":")[0]
        assert module in m.group(1), f"{module} (chart import path) not smoke-imported by the image"
