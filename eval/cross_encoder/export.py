"""Rebuild a trained cross-encoder from train_ce.py's parts, export it to ONNX (fp32), and
quantize it to int8 (onnxruntime dynamic quantization, per-channel weights).

    python eval/cross_encoder/export.py --parts DIR --layers 6 --out eval/cross_encoder/out
    -> out/ce6.fp32.onnx, out/ce6.int8.onnx
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from ce_model import FROZEN, build
from dequantize import default_paths


def load(parts: Path, layers: int, onnx_path: Path, tag: str) -> torch.nn.Module:
    files = sorted(parts.glob(f"{tag}.pt.part*"), key=lambda p: int(p.suffix[5:]))
    state = torch.load(io.BytesIO(b"".join(f.read_bytes() for f in files)))
    model = build(onnx_path, layers)
    full = model.state_dict()
    for key, value in state.items():
        full[key] = value.float()
    missing = set(full) - set(state) - {FROZEN} - {k for k in full if "position_ids" in k}
    if missing:
        raise ValueError(f"parts lack {sorted(missing)}")
    model.load_state_dict(full)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    onnx_path, _ = default_paths()
    parser.add_argument("--parts", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--tag", default=None, help="parts prefix, e.g. ce6s1 (default ce{layers})")
    parser.add_argument("--onnx", type=Path, default=onnx_path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    tag = args.tag or f"ce{args.layers}"
    model = load(args.parts, args.layers, args.onnx, tag)
    model.bert.config._attn_implementation = "eager"
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = args.out / f"{tag}.fp32.onnx"
    int8 = args.out / f"{tag}.int8.onnx"
    ids = torch.tensor(
        [[101, 2054, 2003, 1996, 3007, 1997, 2605, 1029, 102, 2054, 1005, 1055, 102]]
    )
    mask, types = torch.ones_like(ids), torch.tensor([[0] * 9 + [1] * 4])
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
    import onnxruntime as ort

    with torch.no_grad():
        ref = model(ids, mask, types).numpy()
    feeds = {
        "input_ids": ids.numpy(),
        "attention_mask": mask.numpy(),
        "token_type_ids": types.numpy(),
    }
    for path in (fp32, int8):
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[
            0
        ]
        print(
            f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, "
            f"logit {got[0]:.4f} (torch {ref[0]:.4f})"
        )


if __name__ == "__main__":
    main()
