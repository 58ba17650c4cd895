"""Weights that accelerate offloaded (``--device-map`` with ``disk`` or CPU offload): read and edit them.

A dispatched model keeps an offloaded module's parameters on the ``meta`` device and loads them from
its hook's ``weights_map`` at every forward. To read or edit such a module (an SVD, a candidate edit),
:func:`onloaded` puts its weights on the hook's execution device for the duration of a block and
tells the hook not to reload or drop them; afterwards they go back to ``meta``. The weights map is
never touched unless ``keep=True`` (a permanent edit), which stores the edited tensors in the map's
in-memory part (accelerate reads that before the disk), so that layer then lives in CPU memory.
Modules that are not offloaded pass through unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def offload_hook(module: nn.Module):
    """The accelerate hook that offloads ``module``'s own weights, or None."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        if getattr(h, "offload", False) and getattr(h, "weights_map", None) is not None:
            return h
    return None


def is_offloaded(module: nn.Module) -> bool:
    return offload_hook(module) is not None


def _names(module: nn.Module, hook) -> list[str]:
    names = [n for n, _ in module.named_parameters(recurse=hook.place_submodules)]
    if hook.offload_buffers:
        names += [n for n, _ in module.named_buffers(recurse=hook.place_submodules)]
    return names


@contextmanager
def onloaded(modules, keep: bool = False):
    """Materialize the offloaded ones among ``modules`` for the block (see the module docstring)."""
    from accelerate.utils import set_module_tensor_to_device

    done = []
    try:
        for mod in modules:
            hook = offload_hook(mod)
            if hook is None or any(mod is d for d, _ in done):
                continue
            for name in _names(mod, hook):
                set_module_tensor_to_device(mod, name, hook.execution_device, value=hook.weights_map[name])
            hook.offload = False  # the hook now leaves these weights alone at forward time
            done.append((mod, hook))
        yield
    finally:
        for mod, hook in done:
            if keep:
                _store(mod, hook)
            for name in _names(mod, hook):
                set_module_tensor_to_device(mod, name, "meta")
            hook.offload = True


def _store(mod: nn.Module, hook) -> None:
    wm = hook.weights_map
    prefix, data = getattr(wm, "prefix", ""), getattr(wm, "dataset", wm)
    target = getattr(data, "state_dict", data)  # OffloadedWeightsLoader: its in-memory part wins over the disk
    tensors = dict(mod.named_parameters(recurse=hook.place_submodules))
    if hook.offload_buffers:
        tensors.update(mod.named_buffers(recurse=hook.place_submodules))
    for name, t in tensors.items():
        target[prefix + name] = t.detach().to("cpu", copy=True)


def modules_of(matrices) -> list[nn.Module]:
    """The storage modules of some :class:`~leantune.arch.LogicalMatrix` objects (each once)."""
    out: list[nn.Module] = []
    for m in matrices:
        if not any(m.module is x for x in out):
            out.append(m.module)
    return out


def has_offloaded(model: nn.Module) -> bool:
    return any(is_offloaded(m) for m in model.modules())


def real_parameters(model: nn.Module):
    """Parameters not on the meta device (what really occupies memory now)."""
    return (p for p in model.parameters() if p.device != torch.device("meta"))
