"""The precision/recall table in the README: `kallm eval` on each report set.

Sets: QQP validation (the question-disjoint 20% of ../shared/data/qqp_dev.jsonl that
train_verifier.py never sees), MRPC validation, eval/data/nearmiss_test.jsonl and the cache
simulation eval/data/cache_sim.jsonl. Each set's report.json and pr_curve.png go to OUT/<set>/.

    .venv/bin/python eval/report.py [--out eval/results]     # about 5 minutes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from train_verifier import HERE, SHARED, read, split_qqp

from kallm.evaluate import eval_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    qqp_val = data / "qqp_val.jsonl"
    rows = split_qqp(read(SHARED / "qqp_dev.jsonl"))["val"]
    qqp_val.write_text("".join(json.dumps(row) + "\n" for row in rows))
    sets = {
        "qqp_val": qqp_val,
        "mrpc_val": SHARED / "mrpc_val.jsonl",
        "nearmiss_test": HERE / "data" / "nearmiss_test.jsonl",
        "cache_sim": HERE / "data" / "cache_sim.jsonl",
    }
    lines = [
        "| set | pairs or prompts | cosine 0.95: precision / recall / false hits "
        "| kallm: precision / recall / false hits | recall at precision 0.95: cosine / kallm "
        "| at 0.90: cosine / kallm |",
        "|---|---|---|---|---|---|",
    ]
    for name, path in sets.items():
        eval_command(path, None, None, args.out / name, None, None)
        report = json.loads((args.out / name / "report.json").read_text())
        systems = (report["systems"]["cosine"], report["systems"]["kallm"])
        lines.append(
            f"| {name} | {report['counts']['asked']} | {_point(systems[0])} | {_point(systems[1])} "
            f"| {_recalls(systems, '0.95')} | {_recalls(systems, '0.90')} |"
        )
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


def _point(system: dict) -> str:
    h = system["headline"]
    return f"{h['precision'] or 0:.3f} / {h['recall']:.3f} / {h['false_hits']}"


def _recalls(systems: tuple[dict, dict], target: str) -> str:
    values = [s["recall_at_precision"][target] for s in systems]
    return " / ".join("-" if v is None else f"{v:.3f}" for v in values)


if __name__ == "__main__":
    main()
