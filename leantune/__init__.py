"""leantune: Q/V-selective fine-tuning (lr_V = lambda * lr_Q) and SVD edits for in-context learning.

The public API (documented with runnable examples in docs/api.md); names load on first use, so
``import leantune`` stays light (no torch):

* fine-tuning: :func:`qv_param_groups`, :func:`create_optimizer`, :func:`attach_adapters`,
  :class:`AdapterConfig`, :class:`AdaptedModel`, :func:`save_adapters` / :func:`load_adapters`,
  :class:`QVLearningRateCallback` (every group's lr in the Trainer's logs); new adapter methods: :class:`AdapterMethod`,
  :func:`register_method`
* in-context learning: :func:`evaluate_icl`; lm-eval's numbers on the same set-up: ``leantune.lm_eval``
* SVD edits: :func:`search_svd`, :func:`apply_edit`, :class:`Edit`; new search strategies:
  :class:`Strategy`, :class:`Outcome`, :func:`register_strategy`
* foundations: :func:`load_model`, :func:`load_tokenizer`, :class:`SavedFormat` / :func:`register_format`
  (new on-disk weight formats), :func:`get_arch`, :func:`get_task`,
  :func:`register_provider` (task families by name prefix), :func:`save_gguf` (a loaded GGUF model's edited or
  merged matrices written back into a copy of its source GGUF, for llama.cpp)
"""

from __future__ import annotations

# Task families that live above the tasks room register themselves by prefix when imported: lab:N.
# (Light: no torch. Every `import leantune.x` runs this file first, so `lab:N` always resolves.)
from .lab import synthetic as _lab_tasks  # noqa: F401

_FINETUNE = ("qv_param_groups", "create_optimizer", "attach_adapters", "AdaptedModel", "trained_tensors",
             "save_adapters", "load_adapters")
_FINETUNE_CONFIG = ("AdapterConfig",)
_CALLBACKS = ("QVLearningRateCallback",)
_METHODS = ("AdapterMethod", "register_method")
_ICL = ("evaluate_icl",)
_SVD = ("search_svd", "apply_edit", "SelectionRule")
_STRATEGIES = ("Strategy", "Outcome", "register_strategy")
_EDITS = ("Edit",)
_MODELS = ("load_model", "load_tokenizer", "SavedFormat", "register_format")
_ARCH = ("get_arch",)
_TASKS = ("get_task", "register_provider")
_GGUF = ("save_gguf",)

__all__ = list(_FINETUNE + _FINETUNE_CONFIG + _CALLBACKS + _METHODS + _ICL + _SVD + _STRATEGIES + _EDITS + _MODELS + _ARCH
               + _TASKS + _GGUF)


def __getattr__(name: str):
    if name in _FINETUNE:
        from .finetune import api as module
    elif name in _FINETUNE_CONFIG:
        from .finetune import config as module
    elif name in _CALLBACKS:
        from .finetune import callbacks as module
    elif name in _METHODS:
        from .finetune import methods as module
    elif name in _ICL:
        from .icl import api as module
    elif name in _SVD:
        from .svd import api as module
    elif name in _STRATEGIES:
        from .svd import strategies as module
    elif name in _EDITS:
        from .svd import edits as module
    elif name in _MODELS:
        from . import models as module
    elif name in _ARCH:
        from . import arch as module
    elif name in _TASKS:
        from . import tasks as module
    elif name in _GGUF:
        from . import gguf_write as module
    else:
        raise AttributeError(f"module 'leantune' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
