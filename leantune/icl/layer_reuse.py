"""Scoring from a recorded layer: the scorer's mode for models that differ from a reference only in
layers l and above (an SVD edit whose shallowest layer is l, for the SVD search).

Such a change leaves layers 0..l-1 untouched, so what enters layer l is the same as on the reference
model — for the demonstrations (prefix) and for every query batch. A baseline pass over the unedited
model records those hidden states (and the prefix KV cache of the untouched layers) once; each later
scoring then runs only layers l..L: layers below l are swapped for a pass-through that returns the
recorded input of layer l. Embeddings, masks and rotary tables are still built by the model's own
forward (cheap), so any family the scorer supports works unchanged.

Devices and memory. A recorded hidden state lives on the device of the layer it enters (a model
dispatched over several devices keeps each state beside its layer) and is moved there again when it
is replayed. ``memory_budget`` (bytes, ``--reuse-memory``) bounds the recorded states kept on the
model's devices; beyond it they are either kept on the CPU (``overflow="cpu"``, the default when the
model is on an accelerator) or not recorded at all and recomputed from the nearest recorded layer
below (``overflow="recompute"``, the default on the CPU, where "kept on the CPU" would save nothing).
Either way each candidate sees bit-for-bit the same inputs, so the results are identical; only
time and memory change.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..arch import ArchMap
from ..precision import input_device, model_dtype, module_device
from .scoring import (Batch, Collector, Plan, Scores, check_context_length, forward_batch, forward_prefix, make_batches,
                      score)

OVERFLOWS = ("auto", "cpu", "recompute")


def _hidden_arg(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def hidden_size(model) -> int:
    cfg = model.config
    for name in ("hidden_size", "n_embd", "d_model"):
        if getattr(cfg, name, None):
            return int(getattr(cfg, name))
    return int(model.get_input_embeddings().embedding_dim)


def state_bytes_per_layer(model, plan: Plan, batches: list[Batch]) -> int:
    """Bytes of what enters one layer for the whole plan: prefix + every (padded) query batch."""
    tokens = len(plan.prefix_ids) + sum(b.ids.numel() for b in batches)
    return tokens * hidden_size(model) * model_dtype(model).itemsize


def resolve_overflow(overflow: str, device: torch.device) -> str:
    """``auto`` is ``recompute`` on the CPU (where "kept on the CPU" would save nothing), ``cpu`` elsewhere."""
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}, got {overflow!r}")
    if overflow == "auto":
        return "recompute" if device.type == "cpu" else "cpu"
    return overflow


def choose_recorded(candidates: list[int], slots: int) -> list[int]:
    """``slots`` layers out of the sorted ``candidates``, evenly spread, shallowest first (a candidate
    without a recorded layer of its own starts from the nearest recorded one below it)."""
    if slots >= len(candidates):
        return list(candidates)
    if slots <= 0:
        return []
    step = len(candidates) / slots
    return sorted({candidates[int(i * step)] for i in range(slots)})


class LayerReuseScorer:
    """Scores ``plan`` on ``model`` starting from any of ``layers``, with what entered them on the unedited model.

    :meth:`record_baseline` runs first, on the unedited weights: it scores the plan in full and records
    the inputs of the chosen layers. Afterwards, while the model differs from it only in layers >= l,
    :meth:`score_from` (l) gives the same scores as :func:`~leantune.icl.scoring.score` of the changed
    model, computing only layers l..L. ``memory_budget`` / ``overflow``: see the module docstring.
    """

    def __init__(self, model, arch: ArchMap, plan: Plan, batch_size: int, layers: set[int],
                 memory_budget: int | None = None, overflow: str = "auto"):
        self.model, self.arch, self.plan = model, arch, plan
        self.candidates = sorted(set(layers) - {0})  # layer 0's input is the embedding: nothing to skip
        self.batches = make_batches(plan, batch_size)
        self.device = input_device(model)
        overflow = resolve_overflow(overflow, self.device)
        self.per_layer_bytes = state_bytes_per_layer(model, plan, self.batches)
        slots = len(self.candidates) if memory_budget is None else int(memory_budget // max(self.per_layer_bytes, 1))
        self.overflow = overflow
        if overflow == "recompute":
            self.layers = choose_recorded(self.candidates, slots)
            self.on_cpu: set[int] = set()
        else:  # record every candidate layer; the deepest ones beyond the budget wait on the CPU
            self.layers = list(self.candidates)
            self.on_cpu = set(self.candidates[slots:])  # (on a CPU-only run the same memory, just labelled)
        self.prefix_in: dict[int, torch.Tensor] = {}
        self.batch_in: list[dict[int, torch.Tensor]] = [{} for _ in self.batches]
        self.tuple_output = False
        self.baseline: Scores | None = None
        self.prefix_cache = None

    @contextmanager
    def _record(self, store: dict[int, torch.Tensor]):
        hooks = []
        for layer in self.layers:
            where = torch.device("cpu") if layer in self.on_cpu else module_device(self.arch.layer_module(layer))

            def pre(mod, args, kwargs, layer=layer, where=where):
                store[layer] = _hidden_arg(args, kwargs).detach().to(where, copy=True)
            hooks.append(self.arch.layer_module(layer).register_forward_pre_hook(pre, with_kwargs=True))

        def out_kind(mod, args, out):
            self.tuple_output = isinstance(out, tuple)
        hooks.append(self.arch.layer_module(0).register_forward_hook(out_kind))
        try:
            yield
        finally:
            for h in hooks:
                h.remove()

    @torch.no_grad()
    def record_baseline(self, progress=None) -> Scores:
        """Full forward of the unedited model: its scores, and what enters each candidate layer."""
        check_context_length(self.model, self.plan)
        collector = Collector(self.plan)
        tokens = len(self.plan.prefix_ids)
        if self.plan.prefix_ids:
            with self._record(self.prefix_in):
                self.prefix_cache = forward_prefix(self.model, self.plan, self.device)
        for batch, store in zip(self.batches, self.batch_in):
            with self._record(store):
                collector.add(batch, forward_batch(self.model, batch, self.prefix_cache, self.device))
            tokens += batch.tokens
            if progress is not None:
                progress.update(len(batch.rows))
        self.baseline = collector.scores(tokens)
        return self.baseline

    @contextmanager
    def _skip_below(self, layer: int, holder: dict):
        """Layers < ``layer`` return ``holder['x']`` (the recorded input of ``layer``) without computing."""
        def passthrough(*args, **kwargs):
            return (holder["x"],) if self.tuple_output else holder["x"]

        modules = [self.arch.layer_module(i) for i in range(layer)]
        # accelerate's dispatch wraps a layer's forward in an instance attribute: keep it and put it back
        saved = [m.__dict__.get("forward") for m in modules]
        for m in modules:
            m.forward = passthrough
        try:
            yield
        finally:
            for m, f in zip(modules, saved):
                if f is None:
                    del m.forward  # back to the class's forward
                else:
                    m.forward = f

    @torch.no_grad()
    def score_from(self, layer: int, progress=None) -> Scores:
        """Scores of the (currently edited) model, computing only layers ``layer`` .. L."""
        if self.baseline is None:
            raise RuntimeError("record_baseline() must run first, on the unedited model")
        if layer not in self.candidates and layer != 0:
            raise ValueError(f"layer {layer} is not a candidate layer; candidates: {self.candidates}")
        layer = max([r for r in self.layers if r <= layer], default=0)  # nearest recorded layer at or below
        if layer == 0:
            return score(self.model, self.plan, batches=self.batches, progress=progress)
        into = module_device(self.arch.layer_module(layer))  # the state moves to its layer's device
        holder: dict = {}
        tokens = 0
        cache = None
        with self._skip_below(layer, holder):
            if self.plan.prefix_ids:
                holder["x"] = self.prefix_in[layer].to(into)
                cache = forward_prefix(self.model, self.plan, self.device)
                for i in range(layer):  # untouched layers: their prefix keys/values are the baseline's
                    cache.layers[i] = self.prefix_cache.layers[i]
                tokens += len(self.plan.prefix_ids)
            collector = Collector(self.plan)
            for batch, store in zip(self.batches, self.batch_in):
                holder["x"] = store[layer].to(into)
                collector.add(batch, forward_batch(self.model, batch, cache, self.device))
                tokens += batch.tokens
                if progress is not None:
                    progress.update(len(batch.rows))
        return collector.scores(tokens)

    def memory(self) -> dict:
        """Bytes of recorded states now held on the model's devices and on the CPU."""
        out = {"device": 0, "cpu": 0, "recorded_layers": list(self.layers), "on_cpu": sorted(self.on_cpu),
               "overflow": self.overflow, "per_layer": self.per_layer_bytes}
        for store in [self.prefix_in, *self.batch_in]:
            for layer, t in store.items():
                out["cpu" if layer in self.on_cpu else "device"] += t.numel() * t.element_size()
        return out


def estimate_memory(model, arch: ArchMap, plan: Plan, batch_size: int, recorded_layers: int,
                    memory_budget: int | None = None, overflow: str = "auto") -> dict:
    """Expected bytes of scoring ``plan`` with layer reuse over ``recorded_layers`` candidate layers (> 0):
    KV caches (the demonstrations' prefix cache, a second one for the layers a candidate recomputes, and
    one query batch on top of it), the largest batch's activations and kept logits, and the recorded
    hidden states (bounded by ``memory_budget``; beyond it on the CPU or not recorded, per ``overflow``)."""
    itemsize = model_dtype(model).itemsize
    hidden = hidden_size(model)
    batches = make_batches(plan, batch_size)
    p = len(plan.prefix_ids)
    kv = arch.matrix(0, "k").shape[0]  # kv heads x head_dim
    per_token_kv = 2 * arch.num_layers * kv * itemsize
    big = max(batches, key=lambda x: x.ids.numel())
    b, w = big.ids.shape
    out = {"kv_caches": 2 * p * per_token_kv + b * (p + w) * per_token_kv}
    mlp = max([arch.matrix(0, n).shape[0] for n in arch.names if n.startswith("mlp")] + [hidden])
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else 0
    out["activations"] = (2 * b * w * (hidden + mlp) * itemsize + int(big.keep.sum()) * vocab * 4 * 2)
    per_layer = state_bytes_per_layer(model, plan, batches)
    device = input_device(model)
    overflow = resolve_overflow(overflow, device)
    slots = recorded_layers if memory_budget is None else min(recorded_layers, int(memory_budget // max(per_layer, 1)))
    out["recorded_states"] = slots * per_layer
    out["recorded_states_per_layer"] = per_layer
    if overflow != "recompute" and slots < recorded_layers:
        out["recorded_states_on_cpu"] = (recorded_layers - slots) * per_layer
        if device.type == "cpu":  # a CPU-only run: "kept on the CPU" is the same memory
            out["recorded_states"] += out.pop("recorded_states_on_cpu")
    return out
