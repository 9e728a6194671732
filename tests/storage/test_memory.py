import pytest
from contract import StoreContract

from kallm.storage import MemoryStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self):
        async def make(max_entries):
            return MemoryStore(max_entries)

        return make
