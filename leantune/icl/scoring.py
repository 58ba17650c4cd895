"""Batched, prefix-cached continuation scoring for causal LMs.

Every (example, choice) is scored as ``sum log p(continuation tokens | prefix + context)``, exactly as
scoring the joined string with one full forward would (lm-eval's rule), but:

* the demonstrations are encoded once: the KV cache of the longest token prefix shared by *all*
  tokenized prompts is computed under ``no_grad`` and reused by every batch. Because the shared part
  is found on the tokenized prompts (not by tokenizing the pieces separately), prefix + query tokens
  always equal the tokens of the joined string, whatever the tokenizer does at the boundary;
* rows are deduplicated: single-token choices of one example share one row (one forward);
* queries are right-padded and batched with explicit position ids, and logits are computed only at
  the positions whose next token is scored (``logits_to_keep`` boolean mask), never for the whole
  vocabulary at every position (models that cannot take the mask fall back to masking full logits).

A prefix cache is valid only for the weights it was computed with: :func:`score` builds it afresh
on every call, so edited weights are always seen.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from .tokenize import encode


@dataclass
class ChoiceRef:
    row: int  # row of the plan that carries this choice's tokens
    positions: list[int]  # absolute positions whose logits predict the targets
    targets: list[int]


@dataclass
class Plan:
    prefix_ids: list[int]  # shared tokens, encoded once (may be empty)
    rows: list[list[int]]  # absolute token ids of each distinct row (prefix included)
    choices: list[list[ChoiceRef]]  # per example, per choice
    needed: list[list[int]] = field(default_factory=list)  # per row, sorted absolute positions to keep

    @property
    def num_examples(self) -> int:
        return len(self.choices)


def _lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prepare(tokenizer, prefix: str, contexts: list[str], choices: list[list[str]]) -> Plan:
    """Tokenize ``prefix + context + choice`` for every example and choice and plan the rows."""
    row_of: dict[tuple[int, ...], int] = {}
    rows: list[list[int]] = []
    refs: list[list[ChoiceRef]] = []
    first_target = []
    for ctx, chs in zip(contexts, choices):
        ex_refs = []
        for ch in chs:
            ctx_ids, cont_ids = encode(tokenizer, prefix + ctx, ch)
            whole = ctx_ids + cont_ids
            key = tuple(whole[:-1])  # the last token is only a target, never an input
            if key not in row_of:
                row_of[key] = len(rows)
                rows.append(list(key))
            start = len(ctx_ids) - 1
            ex_refs.append(ChoiceRef(row_of[key], list(range(start, start + len(cont_ids))), cont_ids))
            first_target.append(start)
        refs.append(ex_refs)
    prefix_ids = encode(tokenizer, prefix, "")[0] if prefix else []
    shared = min([_lcp(prefix_ids, r) for r in rows] + first_target) if rows else 0
    needed = [set() for _ in rows]
    for ex in refs:
        for ref in ex:
            needed[ref.row].update(ref.positions)
    return Plan(prefix_ids[:shared], rows, refs, [sorted(n) for n in needed])


def _cache_kwarg(model) -> str:
    # transformers 5.x renamed ``past_key_values`` to ``cache`` (older 5.x releases use the old name)
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(out):
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def _expand_cache(cache, batch: int):
    """A per-batch view of the prefix cache: layers are shallow copies whose k/v are expanded views.

    DynamicCache layers append with ``torch.cat`` (which allocates), so the prefix tensors are never
    written: the same prefix cache serves every batch.
    """
    import copy

    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        new = copy.copy(layer)
        new.keys = layer.keys.expand(batch, *layer.keys.shape[1:])
        new.values = layer.values.expand(batch, *layer.values.shape[1:])
        out.layers.append(new)
    return out


def check_context_length(model, plan: Plan) -> None:
    from ..errors import LeantuneError

    cfg = model.config
    limit = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    longest = max((len(r) + 1 for r in plan.rows), default=0)
    if limit and longest > limit:
        raise LeantuneError(f"the longest prompt has {longest} tokens but the model's context is {limit}; "
                            "use fewer --shots or shorter inputs")


@dataclass
class Scores:
    logprobs: list[list[float]]  # per example, per choice: summed continuation log-prob
    lengths: list[list[int]]  # per example, per choice: continuation tokens
    tokens_processed: int


@dataclass
class Batch:
    rows: list[int]
    ids: torch.Tensor  # (B, W) right-padded suffix tokens (after the shared prefix)
    mask: torch.Tensor  # (B, P + W) attention mask over prefix + suffix
    positions: torch.Tensor  # (B, W) absolute positions P .. P + W - 1
    keep: torch.Tensor  # (B, W) True where the next token is scored (logits_to_keep)
    tokens: int  # real (unpadded) suffix tokens


def make_batches(plan: Plan, batch_size: int, pad_id: int = 0) -> list[Batch]:
    p = len(plan.prefix_ids)
    order = sorted(range(len(plan.rows)), key=lambda r: -len(plan.rows[r]))  # similar lengths together
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        b = len(rows)
        suffixes = [plan.rows[r][p:] for r in rows]
        width = max(len(s) for s in suffixes)
        ids = torch.full((b, width), pad_id, dtype=torch.long)
        mask = torch.zeros((b, p + width), dtype=torch.long)
        mask[:, :p] = 1
        keep = torch.zeros((b, width), dtype=torch.bool)
        for i, (r, suf) in enumerate(zip(rows, suffixes)):
            ids[i, :len(suf)] = torch.tensor(suf)
            mask[i, p:p + len(suf)] = 1
            keep[i, [pos - p for pos in plan.needed[r]]] = True
        positions = torch.arange(p, p + width).expand(b, width)
        batches.append(Batch(rows, ids, mask, positions, keep, sum(len(s) for s in suffixes)))
    return batches


class Collector:
    """Turns the kept log-probs of each batch into per-example, per-choice sums."""

    def __init__(self, plan: Plan):
        self.plan = plan
        # row -> position -> target ids read there (choices sharing a row read several ids at one position)
        self.targets: dict[int, dict[int, set[int]]] = {}
        for ex in plan.choices:
            for ref in ex:
                for pos, t in zip(ref.positions, ref.targets):
                    self.targets.setdefault(ref.row, {}).setdefault(pos, set()).add(t)
        self.got: dict[int, dict[tuple[int, int], float]] = {}

    def add(self, batch: Batch, logits: torch.Tensor) -> None:
        logp = torch.log_softmax(logits.float(), dim=-1)  # (kept positions, V), row-major over the batch
        k = 0
        for r in batch.rows:
            got = self.got.setdefault(r, {})
            for pos in self.plan.needed[r]:
                for t in self.targets[r][pos]:
                    got[(pos, t)] = float(logp[k, t])
                k += 1

    def scores(self, tokens: int) -> "Scores":
        logprobs, lengths = [], []
        for ex in self.plan.choices:
            logprobs.append([sum(self.got[ref.row][(pos, t)] for pos, t in zip(ref.positions, ref.targets))
                             for ref in ex])
            lengths.append([len(ref.targets) for ref in ex])
        return Scores(logprobs, lengths, tokens)


# Model classes whose forward does not take a boolean (batch, seq) ``logits_to_keep`` mask: transformers
# before 5.2x sliced ``hidden_states[:, logits_to_keep, :]`` itself, and remote code may still do so.
_NO_MASK_SUPPORT: set[type] = set()


def forward_batch(model, batch: Batch, cache, device):
    """One batch of queries on top of ``cache`` (the prefix's, or None): logits (kept positions, V).

    Asks the model for logits at the kept positions only; a model that cannot take the boolean mask is
    run once with full logits, which are masked here (same numbers, more memory), and remembered.
    """
    keep = batch.keep.to(device)

    def run(logits_to_keep):
        # a fresh expanded cache per call: a failed call may already have appended to the one it got
        kwargs = {_cache_kwarg(model): _expand_cache(cache, len(batch.rows))} if cache is not None else {}
        return model(input_ids=batch.ids.to(device), attention_mask=batch.mask.to(device),
                     position_ids=batch.positions.to(device), use_cache=cache is not None,
                     logits_to_keep=logits_to_keep, **kwargs).logits

    if type(model) not in _NO_MASK_SUPPORT:
        try:
            logits = run(keep)
            if logits.ndim == 2 and logits.shape[0] == int(keep.sum()):
                return logits
        except (IndexError, TypeError):
            pass
        _NO_MASK_SUPPORT.add(type(model))
    return run(0)[keep]


def forward_prefix(model, plan: Plan, device, **kwargs):
    out = model(torch.tensor([plan.prefix_ids], device=device), use_cache=True, logits_to_keep=1, **kwargs)
    return _returned_cache(out)


@torch.no_grad()
def score(model, plan: Plan, batch_size: int = 16, progress=None, batches: list[Batch] | None = None) -> Scores:
    """Score every choice of every example of ``plan`` with ``model`` (eval mode, no grad)."""
    check_context_length(model, plan)
    from ..precision import input_device

    device = input_device(model)
    cache = forward_prefix(model, plan, device) if plan.prefix_ids else None
    collector = Collector(plan)
    tokens = len(plan.prefix_ids)
    for batch in batches or make_batches(plan, batch_size):
        collector.add(batch, forward_batch(model, batch, cache, device))
        tokens += batch.tokens
        if progress is not None:
            progress.update(len(batch.rows))
    return collector.scores(tokens)
