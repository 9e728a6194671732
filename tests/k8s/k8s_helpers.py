"""Helpers for the Kubernetes tests: the chart's paths, helm and kubernetes-validate.

The tools come from scripts/install_k8s_tools.sh (helm and kubectl into .k8s-tools/bin,
kubernetes-validate into .venv). A missing tool fails these tests, never skips them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kallm"
PRODUCTION_VALUES = CHART / "values-production.yaml"
CRD_FILE = CHART / "crds" / "semanticcachepolicies.yaml"
EXAMPLES = ROOT / "deploy" / "examples"
KUBERNETES_VERSION = "1.30.0"
INSTALL_HINT = "run scripts/install_k8s_tools.sh to install helm, kubectl and kubernetes-validate"


def find_tool(name: str) -> str | None:
    """helm or kubectl: the one the install script put in .k8s-tools/bin, else on PATH."""
    local = ROOT / ".k8s-tools" / "bin" / name
    if local.is_file():
        return str(local)
    return shutil.which(name)


def find_kubernetes_validate() -> str | None:
    local = Path(sys.executable).parent / "kubernetes-validate"
    if local.is_file():
        return str(local)
    return shutil.which("kubernetes-validate")


def run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result


def template(helm: str, *args: str) -> list[dict[str, Any]]:
    """The chart rendered with `helm template`, as a list of objects."""
    out = run([helm, "template", "kallm", str(CHART), "--namespace", "ai", *args]).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
