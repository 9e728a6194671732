"""`kallm eval` and `kallm calibrate`: measure hit decisions on labelled prompts.

Scoring runs the server's own path: LocalEmbedder, MemoryStore, Matcher (with the verifier),
the exact lookup, and `decision.choose` with the thresholds `decide_defaults` gives. Each asked
prompt's candidates are collected once with floor 0; every setting of a curve or grid is then
decided by `decision.choose` over those candidates, so a sweep costs no embedding and still
measures what the server would serve.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from kallm import keys
from kallm.embedders import LocalEmbedder
from kallm.match import decision
from kallm.match.canonical import canonical, exact_form
from kallm.match.decision import Decision
from kallm.match.defaults import UNCALIBRATED_THRESHOLD, decide_defaults, load_verifier
from kallm.match.matcher import Candidate, Matcher
from kallm.match.verifier import Verifier
from kallm.settings import DEFAULT_LOCAL_MODEL, load_settings
from kallm.storage import MemoryStore
from kallm.storage.base import Entry, Vector

Kind = Literal["pairs", "cache"]
STEPS = [round(i / 100, 2) for i in range(101)]  # 0.00 .. 1.00; rounded so 0.84 is 0.84
GRID_THRESHOLDS = [round(0.50 + i / 100, 2) for i in range(50)]  # 0.50 .. 0.99
GRID = [(t, p) for t in GRID_THRESHOLDS for p in STEPS]
PRECISION_TARGETS = (0.95, 0.90)
FEW = 100  # calibrating on fewer prompts gets a warning
FOREVER = 100 * 365 * 86400.0  # entries must not expire during a run


class EvalError(Exception):
    """The input cannot be evaluated; the message says why."""


@dataclass(frozen=True)
class Ask:
    namespace: str
    text: str
    correct: str | None  # id of the cached entry whose answer is right; None: any hit is false


@dataclass(frozen=True)
class Plan:
    kind: Kind
    rows: int
    cached: list[tuple[str, str, str]]  # namespace, entry id, text
    asks: list[Ask]


@dataclass(frozen=True)
class Scored:
    """One candidate, reduced to what decisions read (satisfies `decision.Scored`)."""

    entry: str
    similarity: float
    probability: float | None


@dataclass(frozen=True)
class Result:
    """What the cache knew for one asked prompt."""

    correct: str | None
    exact: str | None  # the exact lookup's entry: served whatever the thresholds
    candidates: tuple[Scored, ...]

    def without_verifier(self) -> Result:
        return replace(
            self, candidates=tuple(replace(c, probability=None) for c in self.candidates)
        )


@dataclass(frozen=True)
class Point:
    threshold: float
    min_probability: float
    hits: int
    correct: int
    positives: int

    @property
    def precision(self) -> float | None:  # undefined without hits, never "perfect"
        return self.correct / self.hits if self.hits else None

    @property
    def recall(self) -> float:
        return self.correct / self.positives if self.positives else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p is not None and p + r > 0 else 0.0

    @property
    def false_hits(self) -> int:
        return self.hits - self.correct

    def as_dict(self) -> dict[str, Any]:
        names = "threshold min_probability precision recall f1 false_hits hits positives"
        values = {name: getattr(self, name) for name in names.split()}
        # Four decimals are plenty for a rate and keep the report readable.
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def read_rows(path: Path, limit: int | None = None) -> list[tuple[int, Any]]:
    """The file's rows, each with its line number (blank lines skipped)."""
    rows: list[tuple[int, Any]] = []
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError as error:
        raise EvalError(f"cannot read {path}: {error.strerror}") from None
    for number, line in enumerate(lines, 1):
        if limit is not None and len(rows) >= limit:
            break
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise EvalError(f"{path}:{number}: not JSON ({error.msg})") from None
    if not rows:
        raise EvalError(f"{path} has no rows")
    return rows


def detect_kind(row: Any) -> Kind:
    if isinstance(row, dict) and {"a", "b"} <= row.keys():
        return "pairs"  # a missing label is told by `row_problem`
    if isinstance(row, dict) and {"origin", "similar"} <= row.keys():
        return "cache"
    keys = f"keys {sorted(row)}" if isinstance(row, dict) else f"a JSON {type(row).__name__}"
    raise EvalError(
        f"unknown row format ({keys}): use pairs {{a, b, label}} or "
        "cache simulation {origin, similar, near}"
    )


def row_problem(row: Any, kind: Kind) -> str | None:
    """What keeps `row` from being a row of `kind`, if anything."""
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    if kind == "pairs":
        if not (isinstance(row.get("a"), str) and isinstance(row.get("b"), str)):
            return 'a pair needs "a" and "b" as strings: the prompt cached and the prompt asked'
        if "label" not in row:
            return 'a pair needs a "label": 1 when the answer cached for a is right for b, else 0'
        if row["label"] not in (0, 1) or isinstance(row["label"], float):
            return f'"label" must be 0 or 1, not {row["label"]!r}'
        return None
    similar, near = row.get("similar"), row.get("near") or []
    if not isinstance(row.get("origin"), str):
        return 'a cache simulation row needs "origin" as a string'
    if not (isinstance(similar, str) or _strings(similar)) or not _strings(near):
        return '"similar" must be a string or a list of strings, and "near" a list of strings'
    return None


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def plan(rows: Sequence[dict[str, Any]], kind: Kind) -> Plan:
    try:
        return _plan_pairs(rows) if kind == "pairs" else _plan_cache(rows)
    except (KeyError, TypeError, ValueError) as error:
        raise EvalError(f"row does not fit the {kind} protocol: {error!r}") from None


def _plan_pairs(rows: Sequence[dict[str, Any]]) -> Plan:
    # One namespace per pair: cache `a`, ask `b`; no pair can hit another pair's entry.
    cached = [(f"pair-{i}", str(i), str(row["a"])) for i, row in enumerate(rows)]
    asks = [
        Ask(f"pair-{i}", str(row["b"]), str(i) if int(row["label"]) == 1 else None)
        for i, row in enumerate(rows)
    ]
    return Plan("pairs", len(rows), cached, asks)


def _plan_cache(rows: Sequence[dict[str, Any]]) -> Plan:
    cached: list[tuple[str, str, str]] = []
    ids: dict[str, str] = {}  # origin's exact form -> entry id; a repeat would replace the entry
    asks: list[Ask] = []
    for i, row in enumerate(rows):
        origin = str(row["origin"])
        correct = None
        if i % 2 == 0:
            if (found := ids.get(exact_form(canonical(origin)))) is None:
                found = ids[exact_form(canonical(origin))] = str(i)
                cached.append(("cache", found, origin))
            correct = found
        similar = row["similar"]
        for text in [similar] if isinstance(similar, str) else similar:
            asks.append(Ask("cache", str(text), correct))
        asks.extend(Ask("cache", str(text), None) for text in row.get("near") or [])
    return Plan("cache", len(rows), cached, asks)


def decide(result: Result, threshold: float, min_probability: float) -> str | None:
    """The entry the server would serve, as the proxy decides: exact first, then choose."""
    if result.exact is not None:
        return result.exact
    chosen = decision.choose(result.candidates, threshold, min_probability)
    return chosen.entry if chosen else None


def sweep(results: Sequence[Result], settings: Sequence[tuple[float, float]]) -> list[Point]:
    """Metrics at each (threshold, min_probability), every prompt decided by `decide`.

    Prompts whose candidates fall between the same settings' values decide alike at every
    setting, so each such group is decided once and counted with its size: a 3,000-setting
    grid over 60,000 pairs then costs seconds rather than many minutes."""
    ts = sorted({t for t, _ in settings})
    ps = sorted({p for _, p in settings})
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for r in results:
        cells = [
            (
                bisect_right(ts, c.similarity),
                -1 if c.probability is None else bisect_right(ps, c.probability),
                c.entry == r.correct,
            )
            for c in r.candidates
        ]
        # A candidate below every setting's threshold or probability is never chosen.
        cells = [cell for cell in cells if cell[0] and cell[1]]
        key = (r.correct is not None, r.exact is None, r.exact == r.correct, *cells)
        groups.setdefault(key, [r, 0])[1] += 1
    positives = sum(r.correct is not None for r in results)
    points = []
    for t, p in settings:
        hits = correct = 0
        for result, size in groups.values():
            if (served := decide(result, t, p)) is not None:
                hits += size
                correct += size if served == result.correct else 0
        points.append(Point(t, p, hits, correct, positives))
    return points


def recall_at(points: Sequence[Point], precision: float) -> float | None:
    reached = [pt.recall for pt in points if pt.precision is not None and pt.precision >= precision]
    return max(reached, default=None)


def frontier(points: Sequence[Point]) -> list[Point]:
    """The settings no other beats on both precision and recall, by recall: what a choice
    of setting is among (the whole grid, 5,050 settings, said little more in 600 KB)."""
    measured = [(pt.recall, pt.precision, pt) for pt in points if pt.precision is not None]
    # At each recall the highest precision first, then the stricter setting (as in `best`).
    measured.sort(key=lambda m: (-m[0], -m[1], -m[2].threshold, -m[2].min_probability))
    found: list[Point] = []
    highest = -1.0
    for _, precision, pt in measured:
        if precision > highest:
            found.append(pt)
            highest = precision
    return found[::-1]


def best(points: Sequence[Point], target: float) -> Point | None:
    """Highest recall with precision >= target; ties go to the stricter setting."""
    eligible = [pt for pt in points if pt.precision is not None and pt.precision >= target]
    return max(eligible, key=lambda pt: (pt.recall, pt.threshold, pt.min_probability), default=None)


class Progress:
    """Count/total on stderr at most every two seconds, so short runs stay quiet."""

    def __init__(self, what: str, total: int) -> None:
        self._what, self._total, self._done = what, total, 0
        self._last, self._printed = time.monotonic(), False

    def tick(self) -> None:
        self._done += 1
        now = time.monotonic()
        if now - self._last >= 2 or (self._printed and self._done == self._total):
            print(f"kallm: {self._what} {self._done}/{self._total}", file=sys.stderr, flush=True)
            self._last, self._printed = now, True


async def score(job: Plan, verifier: Verifier | None) -> tuple[list[Result], int]:
    """Every asked prompt's exact hit or candidates (floor 0), and how many texts were too
    long to embed. Uses the server's classes; the embedder's pool runs two texts at a time."""
    embedder = await asyncio.to_thread(LocalEmbedder)
    # Texts are embedded in the canonical form the server embeds (keys.cache_keys).
    every = [t for _, _, t in job.cached] + [a.text for a in job.asks]
    texts = list(dict.fromkeys(map(canonical, every)))
    progress = Progress("embedded", len(texts))

    async def embed(text: str) -> Vector | None:
        vector = await embedder.embed(text)
        progress.tick()
        return vector

    vectors: dict[str, Vector | None] = {}
    try:
        for start in range(0, len(texts), 1000):  # bounded batches: no 100,000 pending tasks
            batch = texts[start : start + 1000]
            vectors.update(zip(batch, await asyncio.gather(*map(embed, batch)), strict=True))
    finally:
        await embedder.close()
    now = time.time()
    fixed: dict[str, Any] = dict(
        embedding_model=embedder.name,
        model="kallm-eval",
        response={},
        created=now,
        expires=now + FOREVER,
    )
    # One store per namespace: namespaces never share entries, and a pairs file with 60,000
    # namespaces in one store would keep a preallocated vector matrix for each.
    namespaces: dict[str, tuple[list[tuple[str, str]], list[int]]] = {}
    for namespace, entry_id, text in job.cached:
        namespaces.setdefault(namespace, ([], []))[0].append((entry_id, text))
    for index, ask in enumerate(job.asks):
        namespaces.setdefault(ask.namespace, ([], []))[1].append(index)
    results: list[Result | None] = [None] * len(job.asks)
    progress = Progress("scored", len(job.asks))
    for namespace, (entries, asked) in namespaces.items():
        store = MemoryStore(len(entries) + 1)
        matcher = Matcher(store, embedder.name, verifier)
        for entry_id, text in entries:
            key = keys.cache_key(namespace, "chat.completions", {}, None, text)
            assert key.text is not None
            entry = Entry(
                entry_id, namespace, key.partition, key.exact, key.text, vectors[key.text], **fixed
            )
            await store.put(entry)
        for index in asked:
            ask = job.asks[index]
            key = keys.cache_key(namespace, "chat.completions", {}, None, ask.text)
            assert key.text is not None
            exact = await store.get_exact(namespace, key.exact, now)
            found: list[Candidate] = []
            if exact is None and (vector := vectors[key.text]) is not None:
                found = await matcher.candidates(namespace, key.partition, key.text, vector, 0, now)
            scored = tuple(Scored(c.entry.id, c.similarity, c.probability) for c in found)
            results[index] = Result(ask.correct, exact.id if exact else None, scored)
            progress.tick()
    too_long = sum(vector is None for vector in vectors.values())
    return [r for r in results if r is not None], too_long


def _system(
    results: Sequence[Result], headline: tuple[float, float], curve: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    points = sweep(results, curve)
    return {
        "headline": sweep(results, [headline])[0].as_dict(),
        "recall_at_precision": {
            f"{p:.2f}": _rounded(recall_at(points, p)) for p in PRECISION_TARGETS
        },
        "curve": [pt.as_dict() for pt in points],
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def load_plan(path: Path, kind: Kind | None, limit: int | None) -> Plan:
    rows = read_rows(path, limit)
    if kind is None:
        try:
            kind = detect_kind(rows[0][1])
        except EvalError as error:
            raise EvalError(f"{path}:{rows[0][0]}: {error}") from None
    for number, row in rows:
        if (problem := row_problem(row, kind)) is not None:
            raise EvalError(f"{path}:{number}: {problem}")
    return plan([row for _, row in rows], kind)


def _need_verifier(**settings: Any) -> tuple[Verifier, Decision]:
    # The server's own choice of verifier and thresholds, with the local model it was
    # trained for; flags (or KALLM_* variables) override the calibrated thresholds.
    config = load_settings(verifier=True, embedding_model=DEFAULT_LOCAL_MODEL, **settings)
    try:
        verifier = load_verifier(config, LocalEmbedder.name)
    except (OSError, ValueError, KeyError) as error:
        raise EvalError(f"cannot load the verifier: {error}") from None
    if verifier is None:
        raise EvalError("the verifier was trained with another embedding model")
    return verifier, decide_defaults(config, verifier)


def eval_command(
    path: Path,
    kind: Kind | None,
    limit: int | None,
    out: Path,
    threshold: float | None,
    verifier_threshold: float | None,
) -> int:
    job = load_plan(path, kind, limit)
    verifier, decision = _need_verifier(
        similarity_threshold=threshold, verifier_threshold=verifier_threshold
    )
    results, too_long = asyncio.run(score(job, verifier))
    t, p = decision.threshold, decision.min_probability
    kallm = _system(results, (t, p), [(t, q) for q in STEPS])
    kallm["sweeps"] = "min_probability"
    kallm["frontier"] = [pt.as_dict() for pt in frontier(sweep(results, GRID))]
    cosine = [r.without_verifier() for r in results]
    plain = _system(cosine, (UNCALIBRATED_THRESHOLD, 0.0), [(s, 0.0) for s in STEPS])
    plain["sweeps"] = "threshold"
    report = {
        "file": str(path),
        "protocol": job.kind,
        "settings": {
            "embedding_model": LocalEmbedder.name,
            "similarity_threshold": t,
            "verifier_threshold": p,
            "calibrated": asdict(verifier.calibration),
            "cosine_threshold": UNCALIBRATED_THRESHOLD,
        },
        "counts": {
            "rows": job.rows,
            "cached": len(job.cached),
            "asked": len(job.asks),
            "positives": sum(r.correct is not None for r in results),
            "exact_hits": sum(r.exact is not None for r in results),
            "too_long_to_embed": too_long,
        },
        "systems": {"kallm": kallm, "cosine": plain},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", "utf-8")
    print_report(report)
    if write_plot(report, out / "pr_curve.png"):
        print(f"wrote {out / 'report.json'} and {out / 'pr_curve.png'}")
    else:
        print(f"wrote {out / 'report.json'}; the PNG needs matplotlib: pip install 'kallm[eval]'")
    return 0


def calibrate_command(
    path: Path, kind: Kind | None, limit: int | None, target: float, verifier: bool
) -> int:
    job = load_plan(path, kind, limit)
    if len(job.asks) < FEW:
        # At 20 hits and precision 0.95, one standard error is 5 points of precision.
        print(
            f"kallm calibrate: warning: only {len(job.asks)} prompts asked: a precision "
            "measured on so few can be off by 10 points or more; label a few hundred "
            "from your own traffic",
            file=sys.stderr,
        )
    results, _ = asyncio.run(score(job, _need_verifier()[0] if verifier else None))
    grid = GRID if verifier else [(s, 0.0) for s in STEPS]
    chosen = best(sweep(results, grid), target)
    size = f"{job.rows} pairs" if job.kind == "pairs" else f"{len(job.asks)} prompts"
    if chosen is None:
        print(f"no setting reaches precision {target} on {size} ({path.name})")
        return 1
    print_setting(chosen, verifier)
    print(
        f"# precision {chosen.precision:.3f} recall {chosen.recall:.3f} "
        f"false hits {chosen.false_hits} on {size} ({path.name})"
    )
    return 0


def propose(points: Sequence[Point], current: Decision) -> Point | None:
    """The setting, at least as strict as `current` on both thresholds, that serves none of
    the wrong pairs and the most right ones; ties go to the least strict."""
    eligible = [
        pt
        for pt in points
        if pt.threshold >= current.threshold
        and pt.min_probability >= current.min_probability
        and pt.false_hits == 0
    ]
    return max(
        eligible, key=lambda pt: (pt.recall, -pt.threshold, -pt.min_probability), default=None
    )


def reported_pairs(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reports as pairs rows (cached prompt, asked prompt, label). A wrong answer to the
    entry's own request removed the entry: no threshold refuses a repeat."""
    return [
        {"a": r["cached_text"], "b": r["asked_text"], "label": int(bool(r["right"]))}
        for r in reports
        if r.get("cached_text") and r.get("asked_text") and r["entry_exact"] != r["asked_exact"]
    ]


def calibrate_reports(reports: Sequence[dict[str, Any]], verifier: bool) -> int:
    """`kallm calibrate --from-reports`: a stricter setting that would have refused every
    reported wrong hit, with what it costs on the reported right ones."""
    rows = reported_pairs(reports)
    wrong = sum(row["label"] == 0 for row in rows)
    if not wrong:
        print(f"no reported wrong hits to refuse ({len(reports)} reports)")
        return 1
    checker: Verifier | None = None
    if verifier:
        checker, current = _need_verifier()
    else:
        config = load_settings(verifier=False, embedding_model=DEFAULT_LOCAL_MODEL)
        current = decide_defaults(config, None)
    results, _ = asyncio.run(score(plan(rows, "pairs"), checker))
    grid = GRID if verifier else [(t, 0.0) for t in GRID_THRESHOLDS]
    chosen = propose(sweep(results, grid), current)
    now = f"the current setting ({current.threshold:.2f}, {current.min_probability:.2f})"
    if chosen is None:
        print(
            f"no setting at least as strict as {now} refuses all {wrong} reported wrong hits; "
            "their reports still block them"
        )
        return 1
    print_setting(chosen, verifier)
    right = len(rows) - wrong
    measured = "no hits" if chosen.precision is None else f"precision {chosen.precision:.3f}"
    print(
        f"# refuses all {wrong} reported wrong hits, serves {chosen.correct} of {right} "
        f"reported right ones ({measured} on the {len(rows)} reported pairs); "
        f"stricter than {now}"
    )
    return 0


def print_setting(chosen: Point, verifier: bool) -> None:
    """A chosen setting as the variables kallm serve reads, ready to paste."""
    print(f"KALLM_SIMILARITY_THRESHOLD={chosen.threshold:.2f}")
    if verifier:
        print(f"KALLM_VERIFIER_THRESHOLD={chosen.min_probability:.2f}")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_report(report: dict[str, Any]) -> None:
    counts = report["counts"]
    print(
        f"{Path(report['file']).name}: {report['protocol']}, {counts['asked']} asked, "
        f"{counts['positives']} positives, {counts['cached']} cached"
    )
    print(
        f"{'system':<8}{'setting':<26}{'precision':>10}{'recall':>8}{'f1':>7}"
        f"{'false hits':>12}{'hits':>7}{'positives':>11}"
    )
    for name, system in report["systems"].items():
        h = system["headline"]
        setting = f"similarity>={h['threshold']:.2f}"
        if name == "kallm":
            setting += f" p>={h['min_probability']:.2f}"
        print(
            f"{name:<8}{setting:<26}{_number(h['precision']):>10}{h['recall']:>8.3f}"
            f"{h['f1']:>7.3f}{h['false_hits']:>12}{h['hits']:>7}{h['positives']:>11}"
        )
    for target in PRECISION_TARGETS:
        found = [
            f"{name} {_number(system['recall_at_precision'][f'{target:.2f}'])}"
            for name, system in report["systems"].items()
        ]
        print(f"recall at precision >= {target:.2f}: " + ", ".join(found))


def write_plot(report: dict[str, Any], path: Path) -> bool:
    """Both curves, precision against recall, headline points marked; False without
    matplotlib (an optional extra: the JSON report needs nothing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for name, system in report["systems"].items():
        h = system["headline"]
        setting = f"similarity >= {h['threshold']:.2f}"
        if name == "kallm":
            setting += f", p >= {h['min_probability']:.2f}"
        sweeps = system["sweeps"].replace("_", " ")
        points = [pt for pt in system["curve"] if pt["precision"] is not None]
        (line,) = axes.plot(
            [pt["recall"] for pt in points],
            [pt["precision"] for pt in points],
            label=f"{name} (sweeping {sweeps}; marked: {setting})",
        )
        if h["precision"] is not None:
            axes.plot(h["recall"], h["precision"], "o", markersize=9, color=line.get_color())
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(f"{Path(report['file']).name} ({report['protocol']}): precision vs recall")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
