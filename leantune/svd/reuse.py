"""Layer-prefix reuse for the SVD search.

An edit whose shallowest layer is l leaves layers 0..l-1 untouched, so what enters layer l is the
same as without the edit — for the demonstrations (prefix) and for every query batch. A baseline
pass records those hidden states (and the prefix KV cache of the untouched layers) once; each
candidate then runs only layers l..L: layers below l are swapped for a pass-through that returns the
recorded input of layer l. Embeddings, masks and rotary tables are still built by the model's own
forward (cheap), so any family the scorer supports works unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..arch import ArchMap
from ..icl.scoring import (Collector, Plan, Scores, check_context_length, forward_batch, forward_prefix,
                           make_batches)


def _hidden_arg(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class LayerReuseRunner:
    def __init__(self, model, arch: ArchMap, plan: Plan, batch_size: int, layers: set[int]):
        self.model, self.arch, self.plan = model, arch, plan
        self.layers = sorted(set(layers) - {0})
        self.batches = make_batches(plan, batch_size)
        self.device = next(model.parameters()).device
        self.prefix_in: dict[int, torch.Tensor] = {}
        self.batch_in: list[dict[int, torch.Tensor]] = [{} for _ in self.batches]
        self.tuple_output = False
        self.baseline: Scores | None = None
        self.prefix_cache = None

    @contextmanager
    def _record(self, store: dict[int, torch.Tensor]):
        hooks = []
        for layer in self.layers:
            def pre(mod, args, kwargs, layer=layer):
                store[layer] = _hidden_arg(args, kwargs).detach().clone()
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
        for m in modules:
            m.forward = passthrough
        try:
            yield
        finally:
            for m in modules:
                del m.forward  # back to the class's forward

    @torch.no_grad()
    def score_from(self, layer: int, progress=None) -> Scores:
        """Scores of the (currently edited) model, computing only layers ``layer`` .. L."""
        if self.baseline is None:
            raise RuntimeError("record_baseline() must run first, on the unedited model")
        if layer == 0:
            from ..icl.scoring import score

            return score(self.model, self.plan, batches=self.batches, progress=progress)
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not recorded; recorded: {self.layers}")
        holder: dict = {}
        tokens = 0
        cache = None
        with self._skip_below(layer, holder):
            if self.plan.prefix_ids:
                holder["x"] = self.prefix_in[layer]
                cache = forward_prefix(self.model, self.plan, self.device)
                for i in range(layer):  # untouched layers: their prefix keys/values are the baseline's
                    cache.layers[i] = self.prefix_cache.layers[i]
                tokens += len(self.plan.prefix_ids)
            collector = Collector(self.plan)
            for batch, store in zip(self.batches, self.batch_in):
                holder["x"] = store[layer]
                collector.add(batch, forward_batch(self.model, batch, cache, self.device))
                tokens += batch.tokens
                if progress is not None:
                    progress.update(len(batch.rows))
        return collector.scores(tokens)

    def runner_from(self, layer: int):
        """A ``runner`` for :meth:`ICLEvaluator.evaluate` that reuses everything below ``layer``."""
        return lambda model, plan, batch_size, bar=None: (
            self.score_from(layer, bar) if plan is self.plan else _plain(model, plan, batch_size))


def _plain(model, plan, batch_size):
    from ..icl.scoring import score

    return score(model, plan, batch_size)
