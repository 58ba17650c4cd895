"""Parts of a model outside the per-layer matrices: the task head.

A task head (``classifier`` of BERT/RoBERTa, ``score`` of GPT-2/Llama/...) is whatever the
``*ForSequenceClassification`` class adds around ``model.base_model``. Asking the module tree for it
(rather than matching names like "classifier") works for every family, and parameters tied to the
base model (an LM head sharing the embedding) are never reported as head parameters.
"""

from __future__ import annotations

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (the model itself otherwise): the map and the head
    always describe the transformers model."""
    get_base = getattr(model, "get_base_model", None)  # PEFT wrapper -> transformers model
    return get_base() if callable(get_base) else model


def head_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Top-level modules that sit beside ``model.base_model`` and own parameters, by name."""
    model = unwrap(model)
    base = model.base_model
    if base is model:
        return {}
    base_params = {id(p) for p in base.parameters()}
    out = {}
    for name, child in model.named_children():
        if child is base:
            continue
        own = [p for p in child.parameters() if id(p) not in base_params]
        if own:
            out[name] = child
    return out


def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters of the task head, by their name in ``model`` (tied base parameters excluded)."""
    model = unwrap(model)
    base_params = {id(p) for p in model.base_model.parameters()}
    out = {}
    for prefix, mod in head_modules(model).items():
        for n, p in mod.named_parameters():
            if id(p) not in base_params:
                out[f"{prefix}.{n}"] = p
    return out
