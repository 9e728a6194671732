import pytest

from kallm.policy import InvalidPolicyHeader, accept, request_policy


def test_defaults():
    rules = request_policy({}, 0.95, 60)
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
    rules = request_policy({"cache-control": header}, 0.95, 60)
    assert (rules.lookup, rules.store) == (lookup, store)


def test_overrides():
    rules = request_policy({"x-kallm-threshold": "0.8", "x-kallm-ttl": "5"}, 0.95, 60)
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
        request_policy(headers, 0.95, 60)


def test_accept_is_inclusive_of_the_threshold():
    assert accept(0.95, 0.95)
    assert not accept(0.9499, 0.95)
