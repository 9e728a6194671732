import sys
import time
from pathlib import Path

import pytest

# The contract module sits beside the backend test modules that import it.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _real_now(monkeypatch):
    # Stores expire entries by the real clock: each test's entries start from now, not from
    # when the contract module was imported (a long suite would find them expired).
    import contract

    monkeypatch.setattr(contract, "NOW", time.time())
