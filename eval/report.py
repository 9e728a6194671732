"""The precision/recall table in the README: `kallm eval` on each report set.

Sets: QQP validation (the question-disjoint 20% of qqp_dev.jsonl that training never sees:
training/splits.py), MRPC validation, eval/data/nearmiss_test.jsonl and the cache simulation
eval/data/cache_sim.jsonl. Each set's report.json and pr_curve.png go to OUT/<set>/. The
labelled pairs come from --shared (default: ../shared/data beside the checkout); the plots
need the `eval` extra (pip install -e '.[eval]'), the table does not.

    .venv/bin/python eval/report.py [--shared DIR] [--out eval/results]     # about 10 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kallm.cli.evaluate import eval_command
from kallm.storage import vectors

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "training"))
from splits import read, split_qqp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "data")
    parser.add_argument(
        "--graph",
        action="store_true",
        help="search every partition through the HNSW graph, however small (by default one "
        "below storage.vectors.EXACT_BELOW rows is searched exhaustively)",
    )
    args = parser.parse_args()
    if args.graph:
        vectors.EXACT_BELOW = 0
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    qqp_val = data / "qqp_val.jsonl"
    rows = split_qqp(read(args.shared / "qqp_dev.jsonl"))["val"]
    qqp_val.write_text("".join(json.dumps(row) + "\n" for row in rows))
    sets = {
        "qqp_val": qqp_val,
        "mrpc_val": args.shared / "mrpc_val.jsonl",
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
