from dataclasses import dataclass

import pytest

from kallm.match.decision import accept, choose
from kallm.proxy.directives import InvalidPolicyHeader, request_policy


def test_defaults():
    rules = request_policy({}, 0.95, 60, 3600)
    assert (rules.lookup, rules.store, rules.threshold, rules.ttl) == (True, True, 0.95, 60)


@pytest.mark.parametrize(
    ("header", "lookup", "store"),
    [
        ("no-cache", False, True),
        ("no-store", True, False),
        ("no-cache, no-store", False, False),
        ("No-Cache", False, True),
        ("max-age=0", True, True),
    ],
)
def test_cache_control(header, lookup, store):
    rules = request_policy({"cache-control": header}, 0.95, 60, 3600)
    assert (rules.lookup, rules.store) == (lookup, store)


def test_overrides():
    rules = request_policy({"x-kallm-threshold": "0.8", "x-kallm-ttl": "5"}, 0.95, 60, 3600)
    assert (rules.threshold, rules.ttl) == (0.8, 5)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-kallm-threshold": "high"},
        {"x-kallm-threshold": "1.5"},
        {"x-kallm-threshold": "nan"},
        {"x-kallm-ttl": "0"},
        {"x-kallm-ttl": "-3"},
        {"x-kallm-ttl": "inf"},
    ],
)
def test_invalid_overrides(headers):
    with pytest.raises(InvalidPolicyHeader):
        request_policy(headers, 0.95, 60, 3600)


def test_accept_needs_the_similarity_and_the_verifier():
    assert accept(0.95, None, 0.95, 0.5)  # no verifier: the threshold alone, inclusive
    assert not accept(0.9499, None, 0.95, 0.5)
    assert accept(0.90, 0.8, 0.85, 0.8)
    assert not accept(0.99, 0.79, 0.85, 0.8)  # the verifier vetoes a close candidate
    assert not accept(0.84, 0.99, 0.85, 0.8)  # and cannot rescue a far one


@dataclass
class Scored:
    similarity: float
    probability: float | None


def test_choose_takes_the_nearest_accepted_candidate():
    near, far = Scored(0.97, 0.2), Scored(0.91, 0.9)
    assert choose([near, far], 0.9, 0.5) is far
    assert choose([near], 0.9, 0.5) is None
    assert choose([], 0.9, 0.5) is None
