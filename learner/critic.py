"""Value model for PPO / T-PPO: the policy's architecture without the LM head, plus a scalar head."""
from __future__ import annotations

import torch
from torch import nn


class Critic(nn.Module):
    def __init__(self, model_path: str, dtype: torch.dtype = torch.float32):
        super().__init__()
        from transformers import AutoModel

        self.backbone = AutoModel.from_pretrained(model_path, dtype=dtype)
        hidden = self.backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1, dtype=dtype)
        nn.init.zeros_(self.head.weight)  # start at V = 0: no bias toward any return
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(h).squeeze(-1).float()
