"""Fixtures for the Kubernetes tests: helm and kubernetes-validate, failing (never skipping)
when scripts/install_k8s_tools.sh has not been run."""

from __future__ import annotations

import pytest
from k8s_helpers import INSTALL_HINT, find_helm, find_kubernetes_validate


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        pytest.fail(f"helm is not installed: {INSTALL_HINT}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    path = find_kubernetes_validate()
    if path is None:
        pytest.fail(f"kubernetes-validate is not installed: {INSTALL_HINT}", pytrace=False)
    return path
