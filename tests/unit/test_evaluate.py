import asyncio
import json
import random

import pytest

from kallm.cli.evaluate import (
    GRID,
    STEPS,
    Ask,
    EvalError,
    Point,
    Progress,
    Result,
    Scored,
    best,
    decide,
    detect_kind,
    frontier,
    load_plan,
    plan,
    propose,
    read_rows,
    recall_at,
    reported_pairs,
    score,
    sweep,
)
from kallm.match import decision


def test_point_metrics_and_undefined_precision():
    point = Point(0.9, 0.5, hits=10, correct=8, positives=16)
    assert point.precision == 0.8 and point.recall == 0.5 and point.false_hits == 2
    assert point.f1 == pytest.approx(2 * 0.8 * 0.5 / 1.3)
    empty = Point(0.99, 1.0, hits=0, correct=0, positives=16)
    assert empty.precision is None and empty.recall == 0.0 and empty.f1 == 0.0
    assert Point(0.9, 0.0, hits=3, correct=0, positives=0).recall == 0.0
    assert set(point.as_dict()) == {
        "threshold",
        "min_probability",
        "precision",
        "recall",
        "f1",
        "false_hits",
        "hits",
        "positives",
    }


def test_protocol_is_detected_from_the_first_row():
    assert detect_kind({"a": "x", "b": "y", "label": 1}) == "pairs"
    assert detect_kind({"origin": "x", "similar": ["y"]}) == "cache"
    with pytest.raises(EvalError, match="unknown row format"):
        detect_kind({"question": "x"})


def test_read_rows_honours_limit_and_names_bad_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": "1", "b": "2", "label": 1}\n\n{"a": "3", "b": "4", "label": 0}\n')
    assert len(read_rows(path)) == 2 and len(read_rows(path, limit=1)) == 1
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(EvalError, match=":2: not JSON"):
        read_rows(path)
    with pytest.raises(EvalError, match="cannot read"):
        read_rows(tmp_path / "missing.jsonl")


def test_each_bad_row_is_named_by_its_file_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = '{"a": "x", "b": "y", "label": 1}'
    cases = {
        '{"a": "x", "b": "z"}': 'needs a "label": 1 when',
        '{"a": "x", "b": "z", "label": 2}': '"label" must be 0 or 1, not 2',
        '{"a": "x", "label": 0}': 'needs "a" and "b"',
        "[1, 2]": "a row must be a JSON object",
    }
    for line, problem in cases.items():
        path.write_text(f"{good}\n\n{line}\n")
        with pytest.raises(EvalError) as raised:
            load_plan(path, None, None)
        assert str(raised.value).startswith(f"{path}:3: ") and problem in str(raised.value)
    path.write_text('{"question": "x"}\n')
    with pytest.raises(EvalError, match=r":1: unknown row format"):
        load_plan(path, None, None)
    path.write_text('{"origin": "o", "similar": [1]}\n')
    with pytest.raises(EvalError, match=r':1: "similar" must be'):
        load_plan(path, None, None)


def test_the_frontier_keeps_the_settings_nothing_beats():
    points = [
        Point(0.9, 0.5, hits=10, correct=9, positives=20),  # precision 0.9, recall 0.45
        Point(0.8, 0.5, hits=20, correct=16, positives=20),  # 0.8, 0.8
        Point(0.85, 0.5, hits=20, correct=15, positives=20),  # beaten by the one above
        Point(0.95, 0.5, hits=10, correct=9, positives=20),  # ties the first: stricter
        Point(0.99, 0.9, hits=0, correct=0, positives=20),  # no hits: no precision
    ]
    assert [(p.threshold, p.recall) for p in frontier(points)] == [(0.95, 0.45), (0.8, 0.8)]


def test_pairs_each_get_a_namespace_and_only_label_1_is_positive():
    job = plan([{"a": "x", "b": "y", "label": 1}, {"a": "x", "b": "z", "label": 0}], "pairs")
    assert job.cached == [("pair-0", "0", "x"), ("pair-1", "1", "x")]
    assert job.asks == [Ask("pair-0", "y", "0"), Ask("pair-1", "z", None)]
    with pytest.raises(EvalError, match="pairs protocol"):
        plan([{"a": "x", "b": "y"}], "pairs")


def test_cache_simulation_caches_even_rows_and_asks_everything():
    rows = [
        {"origin": "o0", "similar": ["s0a", "s0b"], "near": ["n0"]},
        {"origin": "o1", "similar": "s1", "near": ["n1"]},
        {"origin": "o2", "similar": "s2"},
        {"origin": "o3", "similar": ["s3"]},
        {"origin": " o0 ", "similar": ["s4"]},  # the same origin again: one entry serves both
    ]
    job = plan(rows, "cache")
    assert job.cached == [("cache", "0", "o0"), ("cache", "2", "o2")]
    assert {(a.text, a.correct) for a in job.asks} == {
        ("s0a", "0"),
        ("s0b", "0"),
        ("n0", None),
        ("s1", None),
        ("n1", None),
        ("s2", "2"),
        ("s3", None),
        ("s4", "0"),
    }
    assert {a.namespace for a in job.asks} == {"cache"}


def test_decisions_are_exact_first_then_policy_choose():
    candidates = (Scored("2", 0.97, 0.2), Scored("0", 0.93, 0.9))
    asked = Result(correct="0", exact=None, candidates=candidates)
    assert decide(asked, 0.95, 0.5) is None  # "2" is near enough but the verifier rejects it
    assert decide(asked, 0.90, 0.5) == "0"  # the next candidate is accepted
    assert decide(asked, 0.90, 0.1) == "2"  # the nearest accepted one wins: a wrong origin
    assert decide(asked.without_verifier(), 0.95, 0.99) == "2"  # cosine alone: no veto
    assert decide(Result("0", "7", candidates), 0.999, 1.0) == "7"  # exact whatever the setting
    assert decide(Result(None, None, ()), 0.0, 0.0) is None


def test_cache_simulation_scoring_counts_correct_and_false_hits():
    results = [
        Result("0", None, (Scored("0", 0.96, 0.9),)),  # similar hits its own origin
        Result("0", None, (Scored("2", 0.97, 0.9), Scored("0", 0.96, 0.9))),  # wrong origin
        Result(None, None, (Scored("0", 0.98, 0.1),)),  # a near prompt: the verifier saves it
        Result(None, None, (Scored("2", 0.91, 0.9),)),  # similar of an uncached origin
        Result("2", None, ()),  # too long to embed: a positive that can never hit
        Result("2", "2", ()),  # exact repeat
    ]
    (kallm,) = sweep(results, [(0.95, 0.5)])
    assert (kallm.hits, kallm.correct, kallm.positives) == (3, 2, 4)
    (cosine,) = sweep([r.without_verifier() for r in results], [(0.90, 0.0)])
    assert (cosine.hits, cosine.correct, cosine.false_hits) == (5, 2, 3)


@pytest.mark.parametrize(
    "settings",
    [
        [*GRID[::37], (0.84, 0.62), (0.5, 0.0), *[(s, 0.0) for s in STEPS[::9]]],
        [(0.6, 0.3), (0.8, 0.5), (0.9, 0.9), (0.95, 0.31)],  # some candidates never qualify
    ],
)
def test_grouped_sweep_matches_deciding_every_prompt(settings):
    rng = random.Random(7)
    results = []
    for _ in range(400):
        candidates = tuple(
            Scored(str(rng.randrange(4)), rng.random(), rng.choice([None, rng.random()]))
            for _ in range(rng.randrange(4))
        )
        exact = str(rng.randrange(4)) if rng.random() < 0.1 else None
        correct = rng.choice([None, "0", "1"])
        results.append(Result(correct, exact, () if exact else candidates))
    for point in sweep(results, settings):
        served = [decide(r, point.threshold, point.min_probability) for r in results]
        assert point.hits == sum(s is not None for s in served)
        assert point.correct == sum(
            s is not None and s == r.correct for s, r in zip(served, results, strict=True)
        )
        assert point.positives == sum(r.correct is not None for r in results)


def test_decide_uses_policy_choose(monkeypatch):
    calls = []

    def spy(candidates, threshold, min_probability):
        calls.append((threshold, min_probability))
        return None

    monkeypatch.setattr(decision, "choose", spy)
    sweep([Result("0", None, (Scored("0", 0.9, 0.9),))], [(0.8, 0.3), (0.9, 0.5)])
    assert calls == [(0.8, 0.3), (0.9, 0.5)]


def test_calibration_picks_highest_recall_then_the_stricter_setting():
    points = [
        Point(0.80, 0.5, hits=50, correct=45, positives=100),  # precision 0.90: too low
        Point(0.85, 0.5, hits=41, correct=40, positives=100),
        Point(0.88, 0.5, hits=40, correct=40, positives=100),  # same recall, stricter: wins
        Point(0.88, 0.4, hits=41, correct=40, positives=100),
        Point(0.99, 1.0, hits=0, correct=0, positives=100),  # no hits: precision undefined
    ]
    assert best(points, 0.95) == points[2]
    assert best(points, 1.0) == points[2]
    assert best(points[:2], 0.99) is None
    assert best(points[4:], 0.0) is None
    assert recall_at(points, 0.95) == 0.40 and recall_at(points, 0.90) == 0.45
    assert recall_at(points[4:], 0.5) is None


def test_progress_is_quiet_for_short_runs(capsys):
    progress = Progress("embedded", 3)
    for _ in range(3):
        progress.tick()
    assert capsys.readouterr().err == ""


def test_scoring_runs_the_server_path_without_a_verifier():
    rows = [
        {"origin": "What is the capital of France?", "similar": ["what's the capital of France?"]},
        {"origin": "How do I bake bread?", "similar": "Give me a bread recipe"},
        {
            "origin": "How do I reverse a list in Python?",
            "similar": [" How do I reverse a list in  Python?", "word " * 300],
            "near": ["How do I sort a list in Python?"],
        },
    ]
    job = plan(json.loads(json.dumps(rows)), "cache")
    results, too_long = asyncio.run(score(job, None))
    paraphrase, uncached, exact, long, near = results
    assert too_long == 1 and long.candidates == () and long.exact is None
    assert exact.exact == "2" and exact.correct == "2"
    assert [c.entry for c in paraphrase.candidates] == ["0"]  # the nearest only
    assert (
        paraphrase.candidates[0].similarity > 0.9 and paraphrase.candidates[0].probability is None
    )
    assert uncached.correct is None and near.correct is None
    assert near.candidates[0].entry == "2"


def test_the_proposal_is_no_looser_than_now_and_serves_no_reported_wrong_pair():
    now = decision.Decision(0.90, 0.10)
    points = [
        Point(0.85, 0.5, hits=1, correct=1, positives=2),  # looser than now: not proposed
        Point(0.92, 0.10, hits=2, correct=1, positives=2),  # serves a wrong pair
        Point(0.95, 0.10, hits=1, correct=1, positives=2),
        Point(0.93, 0.20, hits=1, correct=1, positives=2),  # as good, less strict: chosen
        Point(0.99, 0.90, hits=0, correct=0, positives=2),
    ]
    chosen = propose(points, now)
    assert (chosen.threshold, chosen.min_probability) == (0.93, 0.20)
    assert propose(points[:2], now) is None


def test_reports_become_pairs_and_repeats_are_left_out():
    base = {"cached_text": "a", "asked_text": "b", "entry_exact": "x", "asked_exact": "y"}
    reports = [
        base | {"right": False},
        base | {"right": True, "asked_text": "c"},
        base | {"right": False, "asked_exact": "x"},  # its own request: the entry went
        base | {"right": False, "asked_text": None},
    ]
    assert reported_pairs(reports) == [
        {"a": "a", "b": "b", "label": 0},
        {"a": "a", "b": "c", "label": 1},
    ]
