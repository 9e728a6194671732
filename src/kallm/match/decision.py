"""The hit decision: which semantic candidate, if any, is served. The server and `kallm eval`
both decide here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


@dataclass(frozen=True)
class Decision:
    """How semantic candidates are judged by default (per request, X-Kallm-Threshold wins)."""

    threshold: float
    min_probability: float


class Scored(Protocol):
    @property
    def similarity(self) -> float: ...

    @property
    def probability(self) -> float | None: ...


C = TypeVar("C", bound=Scored)


def accept(
    similarity: float, probability: float | None, threshold: float, min_probability: float
) -> bool:
    """Whether a semantic candidate is served: the similarity threshold selects candidates,
    the verifier (when it runs) decides."""
    return similarity >= threshold and (probability is None or probability >= min_probability)


def choose(candidates: Sequence[C], threshold: float, min_probability: float) -> C | None:
    """The nearest candidate that is accepted, if any."""
    for candidate in candidates:
        if accept(candidate.similarity, candidate.probability, threshold, min_probability):
            return candidate
    return None


def verdict(hit: Scored | None, nearest: Scored, threshold: float) -> str:
    """What became of a lookup's nearest entry: "hit" (served), "rejected" (at or over the
    threshold, refused by the verifier) or "below" (under the threshold)."""
    if hit is not None:
        return "hit"
    return "rejected" if nearest.similarity >= threshold else "below"
