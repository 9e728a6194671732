"""What the dashboard draws beyond /stats: bounded counts a minute, latencies, namespaces."""

from kallm.activity import MINUTES, NAMESPACES, SIMILARITY_BUCKETS, Activity
from kallm.metrics import Metrics

T = 1_800_000_000.0


def test_minutes_cover_the_last_hour_and_older_ones_go():
    activity = Activity()
    activity.finished(T, "chat.completions", "hit", 0.010, "a")
    activity.finished(T + 30, "chat.completions", "miss", 0.300, "a")
    activity.finished(T + 60 * MINUTES, "chat.completions", "hit", 0.020, "a")
    minutes = activity.view(T + 60 * MINUTES)["minutes"]
    assert len(minutes) == MINUTES and minutes[-1]["hit"] == 1
    assert sum(m["hit"] + m["miss"] for m in minutes) == 1  # the first minute fell out
    assert len(activity.minutes) == 1


def test_latencies_and_busiest_namespaces_are_bounded():
    activity = Activity()
    for i in range(NAMESPACES + 5):
        activity.finished(T, "messages", "miss", i / 1000, f"ns{i}")
    view = activity.view(T)
    assert len(view["namespaces"]) == NAMESPACES + 1 and view["namespaces"]["other"]["miss"] == 5
    assert view["latency_ms"]["miss"]["count"] == NAMESPACES + 5
    assert view["latency_ms"]["miss"]["p50"] == 27.0 and view["latency_ms"]["hit"]["p50"] is None
    assert view["routes"] == {"messages": {"hit": 0, "miss": 55, "bypass": 0, "error": 0}}


def test_similarities_are_counts_per_bucket_by_decision_in_all_by_api_and_namespace():
    metrics = Metrics()
    for similarity, verdict, route, namespace in (
        (0.99, "hit", "chat.completions", "a"),
        (0.995, "hit", "messages", "a"),
        (0.3, "below", "chat.completions", "b"),
        (0.93, "rejected", "chat.completions", "a"),
    ):
        metrics.candidate(similarity, verdict, route, namespace)
    found = metrics.activity.view(T)["similarity"]
    assert found["upper_bounds"] == SIMILARITY_BUCKETS
    views = found["views"]
    assert set(views) == {"all", "api:chat.completions", "api:messages", "namespace:a",
                          "namespace:b"}  # fmt: skip
    assert views["all"]["hit"][SIMILARITY_BUCKETS.index(0.99)] == 1
    assert views["all"]["hit"][SIMILARITY_BUCKETS.index(1.0)] == 1
    assert views["api:chat.completions"]["below"][0] == 1
    assert sum(views["namespace:a"]["rejected"]) == 1 and sum(views["namespace:b"]["hit"]) == 0
    assert 'kallm_candidate_similarity_count{decision="hit"} 2.0' in metrics.exposition().decode()
