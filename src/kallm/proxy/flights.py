"""Identical misses in flight, coalesced in one process: the first request for a key goes
upstream (the leader); the others wait until its answer is stored, then look again and are
served from the cache. A leader whose answer is not stored (an error, a broken or too large
answer, an upstream that does not answer) still lands, and its waiters, finding nothing,
go upstream themselves. No one waits longer than `timeout` (KALLM_COALESCE_TIMEOUT): after
it a flight counts as gone, so a leader that never lands cannot hold its key."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Flight:
    """One request's part in the flight for `key`: it `leads` (and must land it), or waits
    for `landed`."""

    key: str
    leads: bool
    landed: asyncio.Event = field(default_factory=asyncio.Event)


class Flights:
    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._timeout = timeout
        self._clock = clock
        self._flying: dict[str, tuple[Flight, float]] = {}  # key: its leader's, deadline

    def join(self, key: str) -> Flight | None:
        """The caller's part in the flight for `key`; None when coalescing is off."""
        if self._timeout <= 0:
            return None
        now = self._clock()
        flying = self._flying.get(key)
        if flying is not None and flying[1] > now:
            return Flight(key, leads=False, landed=flying[0].landed)
        leader = Flight(key, leads=True)
        self._flying[key] = (leader, now + self._timeout)
        return leader

    def land(self, flight: Flight) -> None:
        """The leader is done: its waiters look again. (A leader that outlived the timeout
        lands only its own waiters, not those of the flight that replaced it.)"""
        flying = self._flying.get(flight.key)
        if flying is not None and flying[0] is flight:
            del self._flying[flight.key]
        flight.landed.set()

    async def wait(self, flight: Flight) -> None:
        """Until the leader lands, or the timeout (then the waiter goes on alone)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(flight.landed.wait(), self._timeout)
