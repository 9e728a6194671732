"""The cross-encoder: MiniLM (dequantized from kallm's int8 ONNX) reading "[CLS] cached [SEP]
asked [SEP]", mean-pooled over the attention mask, one linear layer to a logit."""

from __future__ import annotations

from pathlib import Path

import torch
from dequantize import CONFIG, dequantize, to_bert
from torch import nn

MAX_LEN = 128
FROZEN = "bert.embeddings.word_embeddings.weight"  # not trained, not shipped back


class CrossEncoder(nn.Module):
    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert
        self.head = nn.Linear(CONFIG["hidden_size"], 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled).squeeze(-1)


def build(onnx_path: Path, layers: int) -> CrossEncoder:
    """The pretrained encoder cut to its first `layers` layers, with a fresh head."""
    state = dequantize(onnx_path)
    bert = to_bert(state)
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers
    model = CrossEncoder(bert)
    torch.manual_seed(0)
    nn.init.normal_(model.head.weight, std=0.02)
    nn.init.zeros_(model.head.bias)
    return model
