"""BASELINE, not leantune: a faithful re-implementation of the SVD paper's seed evaluation loop.

What the seed code does per example, and so do we here: build the whole prompt string (the
demonstrations are tokenized and encoded again for every example), run batch 1 through the full
model, take ``log_softmax`` over the full vocabulary at *every* position, then read the label words'
log-probs at the last position. For search candidates it recomputes a randomized
``torch.svd_lowrank(W, q=rank, niter=2)`` every time (``exact=True`` swaps in ``torch.linalg.svd``,
used to check that leantune's exact SVD gives the same predictions). Used only by benchmarks/.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def seed_predict(model, tokenizer, prefix: str, contexts: list[str], label_words: list[str], device=None) -> list[int]:
    label_ids = [tokenizer(" " + w).input_ids[0] for w in label_words]
    preds = []
    for ctx in contexts:
        ids = torch.tensor([tokenizer(prefix + ctx).input_ids], device=device)  # demonstrations re-encoded every time
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)  # (1, T, V): every position, full vocab
        preds.append(int(torch.stack([logp[0, -1, i] for i in label_ids]).argmax()))
    return preds


def seed_low_rank(w: torch.Tensor, rate: float, exact: bool = False) -> torch.Tensor:
    """The seed code's truncation of an [out, in] matrix to rank floor((1 - rate) * min(m, n))."""
    k = max(1, int((1 - rate) * min(w.shape)))
    if exact:
        u, s, vh = torch.linalg.svd(w.float(), full_matrices=False)
        return (u[:, :k] * s[:k]) @ vh[:k]
    u, s, v = torch.svd_lowrank(w.float(), q=k, niter=2)
    return (u * s) @ v.T
