"""Semantic candidates: the nearest cached prompts of a partition, each scored by the verifier.

The server and `kallm eval` both call `Matcher.candidates` and decide with `decision.choose`, so
an evaluation measures exactly what the server serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from kallm.match.verifier import Verifier
from kallm.storage.base import Cache, Entry, Search, Vector


@dataclass(frozen=True)
class Candidate:
    entry: Entry
    similarity: float
    probability: float | None  # the verifier's; None when no verifier runs


class Matcher:
    def __init__(
        self, store: Cache, embedding_model: str, verifier: Verifier | None, limit: int = 1
    ) -> None:
        # One candidate by default: when the verifier rejects the nearest entry, a farther
        # one is less likely still to be right (seen in cache simulations).
        self._store = store
        self._embedding_model = embedding_model
        self._verifier = verifier
        self._limit = limit

    async def candidates(
        self, namespace: str, partition: str, text: str, vector: Vector, floor: float, now: float
    ) -> list[Candidate]:
        """The nearest entries, nearest first. The verifier scores those with similarity at
        least `floor`; the others cannot be served, and tell how near the cache came."""
        query = Search(namespace, partition, vector, self._embedding_model, self._limit, now)
        found = await self._store.search(query)
        scored = []
        for hit in found:
            entry, probability = hit.entry, None
            if hit.similarity >= floor and self._verifier is not None and entry.text is not None:
                probability = await self._verifier.probability(entry.text, text)
            scored.append(Candidate(entry, hit.similarity, probability))
        return scored
