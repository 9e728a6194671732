"""The flight book behind coalescing: one leader per key, waiters released when it lands, and
no flight outlives the timeout."""

from __future__ import annotations

import asyncio

from inprocess import Clock

from kallm.proxy.flights import Flights


def test_the_first_leads_and_the_others_wait_until_it_lands():
    async def run() -> None:
        flights = Flights(60, Clock(0.0))
        leader, waiter = flights.join("k"), flights.join("k")
        assert leader is not None and leader.leads
        assert waiter is not None and not waiter.leads
        other = flights.join("other")
        assert other is not None and other.leads
        waiting = asyncio.create_task(flights.wait(waiter))
        await asyncio.sleep(0)
        assert not waiting.done()
        flights.land(leader)
        await waiting
        again = flights.join("k")
        assert again is not None and again.leads  # landed: the next one leads again

    asyncio.run(run())


def test_a_flight_that_never_lands_is_gone_after_the_timeout():
    async def run() -> None:
        clock = Clock(0.0)
        flights = Flights(60, clock)
        stale = flights.join("k")
        clock.now = 59.0
        follower = flights.join("k")
        assert follower is not None and not follower.leads
        clock.now = 61.0
        fresh = flights.join("k")
        assert fresh is not None and fresh.leads  # a new leader
        assert stale is not None
        flights.land(stale)  # late: it releases its own waiters only
        assert follower.landed.is_set() and not fresh.landed.is_set()
        late = flights.join("k")
        assert late is not None and not late.leads  # the new flight still stands

    asyncio.run(run())


def test_a_timeout_of_zero_turns_coalescing_off():
    flights = Flights(0)
    assert flights.join("k") is None and flights.join("k") is None
