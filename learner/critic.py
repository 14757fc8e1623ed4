"""Value model for PPO / T-PPO: the policy's architecture (optionally its first N blocks) without the LM
head, plus a scalar head; and partial fine-tuning (freeze all but the top blocks)."""

from __future__ import annotations

import torch
from torch import nn


class Critic(nn.Module):
    def __init__(self, model_path: str, dtype: torch.dtype = torch.float32, layers: int | None = None):
        """`layers`: keep only the policy's first N blocks — a smaller value model for small machines."""
        super().__init__()
        from transformers import AutoModel

        self.backbone = AutoModel.from_pretrained(model_path, dtype=dtype)
        if layers is not None:
            blocks = self.backbone.layers
            if not 1 <= layers <= len(blocks):
                raise ValueError(f"critic_layers must be in 1..{len(blocks)}, got {layers}")
            self.backbone.layers = nn.ModuleList(list(blocks)[:layers])
            self.backbone.config.num_hidden_layers = layers
            if hasattr(self.backbone.config, "layer_types") and self.backbone.config.layer_types:
                self.backbone.config.layer_types = self.backbone.config.layer_types[:layers]
        hidden = self.backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1, dtype=dtype)
        nn.init.zeros_(self.head.weight)  # start at V = 0: no bias toward any return
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(h).squeeze(-1).float()


def freeze_below(model: nn.Module, train_layers: int) -> int:
    """Partial fine-tuning: only the top `train_layers` transformer blocks and the final norm (and any
    head outside the transformer, such as the critic's value head) keep requires_grad. Returns the
    number of trainable parameters. Embeddings and the LM head stay frozen (tied in small models)."""
    decoder = getattr(model, "backbone", model)
    decoder = decoder.get_decoder() if hasattr(decoder, "get_decoder") else decoder
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, nn.ModuleList) or not len(blocks):
        raise ValueError(f"train_layers: cannot find the transformer blocks of {type(model).__name__}")
    if train_layers > len(blocks):
        raise ValueError(f"train_layers ({train_layers}) exceeds the model's {len(blocks)} blocks")
    model.requires_grad_(False)
    for block in blocks[-train_layers:]:
        block.requires_grad_(True)
    if isinstance(getattr(decoder, "norm", None), nn.Module):
        decoder.norm.requires_grad_(True)
    if isinstance(getattr(model, "head", None), nn.Module):
        model.head.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
