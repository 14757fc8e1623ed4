"""Packing of named tensors into flat byte buckets, and the per-bucket checksum.

The sender sends each tensor once (`dedupe`: tied weights, which a state_dict lists under two names;
the announcement lists the aliases and the receiver restores them, `expand`), plans buckets of about
`bucket_mb` (a tensor never straddles two), and sends a checksum trailer after the data: an int64
(buckets, 2) tensor with one `digest` per bucket. A bucket of one tensor (any tensor above `bucket_mb`)
travels straight from that tensor's memory (`direct`, no copy); the others are packed into one uint8
buffer each (one collective per bucket, whatever the dtypes). The receiver unpacks views of its buffers.

Invariants:
  - `digest` is one function of the bytes, whatever the device: a CPU sender and a CUDA receiver (or the
    reverse) agree on it. `TRAILER` names the scheme; a receiver refuses a manifest naming another one;
  - CPU copies and checksums run on the calling thread only (numpy, never torch's intra-op pool): on a
    small, busy machine the pool's threads fight the transfer's own threads for the cores (2 cores
    under load: torch's two-thread copy of a 621 MiB state dict took 1.7 s, one thread 0.06 s);
  - a pack buffer is reused push after push (fresh pages cost more than the copy itself); a direct
    bucket is the caller's memory and is never written to.
"""

from __future__ import annotations

import numpy as np
import torch

from services.schemas import TensorMeta

Named = list[tuple[str, torch.Tensor]]
# WeightVersion.checksum: checksums follow the data as an int64 (buckets, 2) tensor, one `digest` each
TRAILER = "rowsum64-v2"
ROW_WORDS = 512  # digest rows: 512 little-endian 64-bit words (4 KiB)
_MASK = (1 << 64) - 1


def plan_buckets(named: Named, bucket_bytes: int, direct_bytes: int | None = None) -> list[TensorMeta]:
    """Bucket ids in sending order. A tensor of at least `direct_bytes` (default: `bucket_bytes`) is a
    bucket of its own; the smaller ones fill packed buckets of at most `bucket_bytes`, each opened at
    the first tensor that does not fit the previous one (so a packed bucket may collect small tensors
    from many layers, interleaved with the direct ones: the manifest's order is the tensors' order)."""
    direct_bytes = bucket_bytes if direct_bytes is None else direct_bytes
    metas, n, packed, size = [], 0, -1, 0
    for name, t in named:
        nbytes = t.numel() * t.element_size()
        if nbytes >= direct_bytes:
            bucket, n = n, n + 1
        else:
            if packed < 0 or size + nbytes > bucket_bytes:
                packed, size, n = n, 0, n + 1
            bucket, size = packed, size + nbytes
        metas.append(
            TensorMeta(
                name=name,
                shape=list(t.shape),
                dtype=str(t.dtype).removeprefix("torch."),
                nbytes=nbytes,
                bucket=bucket,
            )
        )
    return metas


def dedupe(named: Named) -> tuple[Named, list[tuple[int, str, str]]]:
    """Split off the tensors that are the same view of the same memory as an earlier one (tied
    weights: a state_dict lists the embedding twice): (the unique ones, [(position, name, source)])."""
    first: dict[tuple, str] = {}
    unique, aliases = [], []
    for i, (name, t) in enumerate(named):
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and key in first:
            aliases.append((i, name, first[key]))
            continue
        first.setdefault(key, name)
        unique.append((name, t))
    return unique, aliases


def expand(named: Named, aliases: list) -> Named:
    """The inverse of `dedupe` on the receiver: every alias again at its position, the same tensor."""
    by_name, out = dict(named), list(named)
    for i, name, source in sorted(aliases):
        if source not in by_name or not 0 <= i <= len(out):
            raise ValueError(f"alias {name!r} -> {source!r} at {i} does not match the manifest")
        out.insert(i, (name, by_name[source]))
    return out


def num_buckets(metas: list[TensorMeta]) -> int:
    return max((m.bucket for m in metas), default=-1) + 1


def grouped(named: Named, metas: list[TensorMeta]) -> list[list[torch.Tensor]]:
    """The tensors of each bucket, in order."""
    out: list[list[torch.Tensor]] = [[] for _ in range(num_buckets(metas))]
    for (_, t), m in zip(named, metas):
        out[m.bucket].append(t)
    return out


def direct(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """A bucket of one contiguous tensor travels straight from the tensor's memory (no packing copy):
    its bytes, a view. None when the bucket must be packed."""
    if len(tensors) != 1:
        return None
    t = tensors[0]
    return _bytes(t) if t.is_contiguous() and t.data_ptr() % 8 == 0 else None  # aligned for `digest`


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def pack(tensors: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """Concatenate tensors of any dtype into one flat byte buffer (one collective per bucket); `out`
    reuses a buffer from the previous push when it has the right size and device."""
    parts = [_bytes(t) for t in tensors]
    n = sum(p.numel() for p in parts)
    if out is None or out.numel() != n or out.device != parts[0].device:
        out = torch.empty(n, dtype=torch.uint8, device=parts[0].device)
    if out.device.type != "cpu":
        return torch.cat(parts, out=out)
    dst, off = out.numpy(), 0
    for p in parts:  # single-threaded memcpy per tensor (see the module docstring)
        dst[off : off + p.numel()] = p.numpy()
        off += p.numel()
    return out


def unpack(buf: torch.Tensor, metas: list[TensorMeta]) -> Named:
    """Views of one bucket's tensors, in the order `metas` lists them."""
    out, off = [], 0
    for m in metas:
        raw = buf[off : off + m.nbytes]
        out.append((m.name, raw.view(getattr(torch, m.dtype)).reshape(m.shape)))
        off += m.nbytes
    return out


def _signed(x: int) -> int:
    x &= _MASK
    return x - (1 << 64) if x >= 1 << 63 else x


def digest(buf: torch.Tensor) -> tuple[int, int]:
    """Checksum of one byte bucket, to catch corruption in transit (not tampering), at memory speed.

    The bytes are read as little-endian 64-bit words (the last one zero-padded) in rows of ROW_WORDS
    (4 KiB). With s_j the sum of row j, the pair is (sum_j s_j, sum_j (2j + 1) s_j), both mod 2**64 (as
    int64). It catches any change confined to one word (a bit flip, a torn write), a row replaced by
    other data, truncated, stale or misplaced data (rows moved: the weights are odd, so no change in a
    row cancels out), except by a 2**-64-ish coincidence; not two words swapped within one row, which no
    transport does (a CRC-32 costs 5x more: ~4 GB/s against ~22 GB/s here). On CPU it is numpy on the
    calling thread; on GPU the same arithmetic runs on the device (no copy of the weights to the host)."""
    n = buf.numel()
    whole = n - n % 8
    rows, rest = divmod(whole // 8, ROW_WORDS)
    sums = _sums_numpy if buf.device.type == "cpu" else _sums_torch
    a, b, last = sums(buf[:whole], rows)
    if whole < n:  # the tail bytes, zero-padded to one word, end the partial last row
        last += int.from_bytes(bytes(buf[whole:].cpu().tolist()), "little")
    if rest or whole < n:  # the partial last row is row `rows`
        a, b = a + last, b + (2 * rows + 1) * last
    return _signed(a), _signed(b)


def _sums_numpy(data: torch.Tensor, rows: int) -> tuple[int, int, int]:
    """(sum of the row sums, their odd-weighted sum, sum of the words after the full rows); uint64."""
    words = data.numpy().view(np.uint64)
    sums = np.add.reduce(words[: rows * ROW_WORDS].reshape(rows, ROW_WORDS), axis=1)
    odd = np.arange(1, 2 * rows + 1, 2, dtype=np.uint64)
    last = int(np.add.reduce(words[rows * ROW_WORDS :]))
    return int(np.add.reduce(sums)), int(np.add.reduce(sums * odd)), last


def _sums_torch(data: torch.Tensor, rows: int) -> tuple[int, int, int]:
    """The same on the tensor's device, in int64 (wrapping: equal mod 2**64)."""
    words = data.view(torch.int64)
    sums = words[: rows * ROW_WORDS].view(rows, ROW_WORDS).sum(1)
    odd = torch.arange(1, 2 * rows + 1, 2, dtype=torch.int64, device=data.device)
    last = int(words[rows * ROW_WORDS :].sum())
    return int(sums.sum()), int((sums * odd).sum()), last


class BufferPool:
    """Receive buffers by size, reused push after push (fresh pages cost more than the copy itself).
    Several buckets often have the same size (identical layers): each keeps a buffer of its own."""

    def __init__(self, device: torch.device):
        self.device = device
        self._free: dict[int, list[torch.Tensor]] = {}
        self._lent: list[torch.Tensor] = []

    def take(self, size: int) -> torch.Tensor:
        free = self._free.get(size)
        buf = free.pop() if free else torch.empty(size, dtype=torch.uint8, device=self.device)
        self._lent.append(buf)
        return buf

    def recycle(self) -> None:
        """The lent buffers are free again (their contents were copied out)."""
        for buf in self._lent:
            self._free.setdefault(buf.numel(), []).append(buf)
        self._lent = []

    def discard(self) -> None:
        """Forget the lent buffers (after a failure: never reuse memory a dead transfer may touch)."""
        self._lent = []
