"""`kallm eval` and `kallm calibrate` as users run them: subprocesses on small JSONL files."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PAIRS = [
    # Repeats up to whitespace: exact hits, right at every setting.
    ("What is the capital of France?", " What is the  capital of France?", 1),
    ("How do I reverse a list in Python?", "How do I reverse a list in Python?", 1),
    # Clear paraphrases.
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?", 1),
    ("What is the boiling point of water?", "At what temperature does water boil?", 1),
    ("How can I learn to play the guitar?", "What is the best way to learn guitar?", 1),
    ("How do you say good morning in Spanish?", "Translate 'good morning' into Spanish", 1),
    # Clear near-misses: a cached answer to one is wrong for the other.
    ("What is the capital of France?", "What is the capital of Germany?", 0),
    ("How far is 5 km in miles?", "How far is 50 km in miles?", 0),
    (
        "How do I enable two-factor authentication?",
        "How do I disable two-factor authentication?",
        0,
    ),
    ("Convert 100 USD to EUR", "Convert 100 EUR to USD", 0),
]


def clean_env(**extra: str) -> dict[str, str]:
    """No KALLM_* settings from the test runner: the calibrated defaults apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KALLM_", "OPENAI_"))}
    return {**env, **extra}


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def kallm(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kallm", *map(str, args)],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eval")
    return write_jsonl(folder / "pairs.jsonl", [{"a": a, "b": b, "label": y} for a, b, y in PAIRS])


def test_eval_writes_report_and_plot(pairs: Path, tmp_path: Path):
    run = kallm("eval", pairs, "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["protocol"] == "pairs" and report["file"].endswith("pairs.jsonl")
    assert report["counts"] == {
        "rows": 10,
        "cached": 10,
        "asked": 10,
        "positives": 6,
        "exact_hits": 2,
        "too_long_to_embed": 0,
    }
    settings = report["settings"]
    calibrated = settings["calibrated"]
    assert settings["similarity_threshold"] == calibrated["similarity_threshold"]
    assert settings["verifier_threshold"] == calibrated["min_probability"]
    assert settings["cosine_threshold"] == 0.95
    kallm_system, cosine = report["systems"]["kallm"], report["systems"]["cosine"]
    for system in (kallm_system, cosine):
        headline = system["headline"]
        assert {"precision", "recall", "f1", "false_hits", "hits", "positives"} <= set(headline)
        assert headline["positives"] == 6 and headline["hits"] >= 2  # the exact repeats
        assert set(system["recall_at_precision"]) == {"0.95", "0.90"}
        assert len(system["curve"]) == 101
        assert {"threshold", "precision", "recall", "f1", "false_hits"} <= set(system["curve"][0])
    assert cosine["headline"]["threshold"] == 0.95
    assert [pt["min_probability"] for pt in kallm_system["curve"]][:3] == [0.0, 0.01, 0.02]
    # The grid's frontier: recall falls as precision rises, and the report stays small.
    edge = kallm_system["frontier"]
    assert edge
    for a, b in itertools.pairwise(edge):
        assert a["recall"] < b["recall"] and a["precision"] > b["precision"]
    assert (tmp_path / "out" / "report.json").stat().st_size < 64_000
    # Sweeping to the strictest end leaves only the exact repeats: all right.
    assert kallm_system["curve"][-1]["false_hits"] == 0
    assert (tmp_path / "out" / "pr_curve.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "kallm " in run.stdout and "cosine " in run.stdout
    assert "recall at precision >= 0.95" in run.stdout


def test_eval_flags_override_calibrated_thresholds(pairs: Path, tmp_path: Path):
    run = kallm(
        "eval", pairs, "--out", tmp_path, "--threshold", "0.9", "--verifier-threshold", "0.4"
    )
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["similarity_threshold"] == 0.9
    assert report["systems"]["kallm"]["headline"]["min_probability"] == 0.4
    assert "similarity>=0.90 p>=0.40" in run.stdout


def test_eval_cache_simulation_without_matplotlib(tmp_path: Path):
    rows = [
        {"origin": "What is the capital of France?", "similar": ["What is the capital of France?"]},
        {"origin": "How do I bake bread?", "similar": "Give me a simple bread recipe"},
        {
            "origin": "How do I reverse a list in Python?",
            "similar": ["What's the way to reverse a Python list?"],
            "near": ["How do I sort a list in Python?"],
        },
    ]
    data = write_jsonl(tmp_path / "sim.jsonl", rows)
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    env = clean_env(PYTHONPATH=str(blocker.parent))
    run = kallm("eval", data, "--out", tmp_path / "out", env=env)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["protocol"] == "cache"
    counts = report["counts"]
    assert (counts["cached"], counts["asked"], counts["positives"]) == (2, 4, 2)
    assert counts["exact_hits"] == 1
    assert not (tmp_path / "out" / "pr_curve.png").exists()
    assert "pip install 'kallm[eval]'" in run.stdout


def test_calibrate_prints_settings_for_a_reachable_target(pairs: Path):
    run = kallm("calibrate", pairs, "--target-precision", "0.9")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("KALLM_SIMILARITY_THRESHOLD=0.")
    assert lines[1].startswith("KALLM_VERIFIER_THRESHOLD=")
    assert lines[2].startswith("# precision ") and "on 10 pairs (pairs.jsonl)" in lines[2]
    assert "warning: only 10 prompts asked" in run.stderr  # too few to trust a precision
    threshold = float(lines[0].split("=")[1])
    assert 0.70 <= threshold <= 0.99

    alone = kallm("calibrate", pairs, "--target-precision", "0.9", "--no-verifier")
    assert alone.returncode == 0, alone.stderr
    lines = alone.stdout.strip().splitlines()
    assert lines[0].startswith("KALLM_SIMILARITY_THRESHOLD=") and lines[1].startswith("# precision")
    assert "KALLM_VERIFIER_THRESHOLD" not in alone.stdout


def test_calibrate_fails_when_no_setting_reaches_the_target(tmp_path: Path):
    # A label-0 pair of identical prompts is an exact hit at every setting: precision 1.0
    # is out of reach whatever the thresholds.
    rows = [{"a": a, "b": b, "label": y} for a, b, y in PAIRS]
    rows.append({"a": "Is it going to rain today?", "b": "Is it going to rain today?", "label": 0})
    data = write_jsonl(tmp_path / "unreachable.jsonl", rows)
    run = kallm("calibrate", data, "--target-precision", "1.0")
    assert run.returncode == 1
    assert "no setting reaches precision 1.0" in run.stdout
    assert "KALLM_SIMILARITY_THRESHOLD" not in run.stdout


def test_bad_input_is_reported_without_a_traceback(tmp_path: Path):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"question": "?"}])
    run = kallm("eval", data, "--out", tmp_path)
    assert run.returncode == 1
    assert f"kallm: {data}:1: unknown row format" in run.stderr and "Traceback" not in run.stderr
