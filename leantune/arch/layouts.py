"""Row layouts of fused projections.

A fused projection computes several logical matrices in one GEMM; its weight stacks their output
rows in a family-specific order. Each function here returns, for one logical part, the output rows
of the fused weight that belong to it: a ``slice`` when they are contiguous (so reads are views),
otherwise a ``LongTensor`` of row indices in the order the model itself reads them.
"""

from __future__ import annotations

import torch

Rows = slice | torch.Tensor


def concatenated(sizes: dict[str, int], part: str) -> slice:
    """``[A | B | C]`` on the output axis, e.g. GPT-2 ``c_attn`` or Phi-3 ``qkv_proj`` (GQA sizes)."""
    start = 0
    for name, size in sizes.items():
        if name == part:
            return slice(start, start + size)
        start += size
    raise KeyError(part)


def per_head_interleaved(num_heads: int, head_dim: int, part: str, parts=("q", "k", "v")) -> torch.Tensor:
    """``[heads, 3, head_dim]`` on the output axis (GPT-NeoX, Bloom, Falcon without multi-query)."""
    grid = torch.arange(num_heads * len(parts) * head_dim).view(num_heads, len(parts), head_dim)
    return grid[:, parts.index(part), :].reshape(-1)


def grouped_kv(num_kv_heads: int, q_per_kv: int, head_dim: int, part: str) -> torch.Tensor:
    """Falcon ``new_decoder_architecture``: ``[kv_groups, q_per_kv + 2, head_dim]``.

    Each group holds its query heads, then its one key head, then its one value head.
    """
    grid = torch.arange(num_kv_heads * (q_per_kv + 2) * head_dim).view(num_kv_heads, q_per_kv + 2, head_dim)
    if part == "q":
        picked = grid[:, :q_per_kv, :]
    elif part == "k":
        picked = grid[:, q_per_kv, :]
    elif part == "v":
        picked = grid[:, q_per_kv + 1, :]
    else:
        raise KeyError(part)
    return picked.reshape(-1)


def rows_count(rows: Rows) -> int:
    if isinstance(rows, slice):
        return rows.stop - rows.start
    return int(rows.numel())
