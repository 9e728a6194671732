"""What a newcomer meets first: the README's commands as written, the version, the licence
and the changelog."""

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def shell_lines(markdown: str) -> list[str]:
    """The lines of the fenced `sh` blocks."""
    return [
        line
        for block in re.findall(r"^```sh\n(.*?)^```", markdown, re.S | re.M)
        for line in block.splitlines()
    ]


def test_readme_commands_run_from_the_quick_start_venv_without_activating_it():
    lines = shell_lines(README)
    assert any(line.startswith(".venv/bin/kallm ") for line in lines)
    bare = [line for line in lines if re.match(r"(kallm|python|pip|pytest)\b", line)]
    assert bare == []  # "command not found" unless the venv is activated


def test_version_is_the_package_version():
    shown = subprocess.run(
        [sys.executable, "-m", "kallm", "--version"], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == f"kallm {version('kallm')}"


def test_the_licence_is_the_one_pyproject_names_and_the_changelog_has_this_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    licence = (ROOT / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert f"## {project['version']}" in (ROOT / "CHANGELOG.md").read_text()
