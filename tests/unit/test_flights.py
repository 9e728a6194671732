"""The flight book behind coalescing: one leader per key, waiters released when it lands, and
no flight outlives the timeout."""

from __future__ import annotations

import asyncio

from kallm.proxy.flights import Flights


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_first_leads_and_the_others_wait_until_it_lands():
    async def run() -> None:
        flights = Flights(60, Clock())
        assert flights.join("k") is None  # leads
        landed = flights.join("k")
        assert landed is not None and flights.join("other") is None
        waiter = asyncio.create_task(flights.wait(landed))
        await asyncio.sleep(0)
        assert not waiter.done()
        flights.land("k")
        await waiter
        assert flights.join("k") is None  # landed: the next one leads again

    asyncio.run(run())


def test_a_flight_that_never_lands_is_gone_after_the_timeout():
    clock = Clock()
    flights = Flights(60, clock)
    assert flights.join("k") is None
    clock.now = 59.0
    assert flights.join("k") is not None
    clock.now = 61.0
    assert flights.join("k") is None  # a new leader


def test_a_timeout_of_zero_turns_coalescing_off():
    flights = Flights(0)
    assert flights.join("k") is None and flights.join("k") is None
