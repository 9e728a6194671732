"""Fixtures for the Kubernetes tests: helm, kubectl and kubernetes-validate, failing (never
skipping) when scripts/install_k8s_tools.sh has not been run."""

from __future__ import annotations

import pytest
from k8s_helpers import INSTALL_HINT, find_kubernetes_validate, find_tool


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_tool("helm")
    if path is None:
        pytest.fail(f"helm is not installed: {INSTALL_HINT}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = find_tool("kubectl")
    if path is None:
        pytest.fail(f"kubectl is not installed: {INSTALL_HINT}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    path = find_kubernetes_validate()
    if path is None:
        pytest.fail(f"kubernetes-validate is not installed: {INSTALL_HINT}", pytrace=False)
    return path
