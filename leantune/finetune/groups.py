"""Optimizer parameter groups, built from what :func:`attach` trained (i.e. from the architecture map).

The paper's code groups by substring ("value" / "v_proj"), puts every 1-D tensor in the V group and the
classifier in the Q/K group. Here every group is explicit:

==================  =================================  ==============
group               learning rate                      weight decay
==================  =================================  ==============
``q``               lr                                 weight_decay
``k``               k_lr_ratio * lr                    weight_decay
``v``               v_lr_ratio * lr  (lambda)          weight_decay
``o``               lr                                 weight_decay
``<m>.bias``        the lr of matrix m (full only)     0
``<m>.lora_A``      lr of m                            weight_decay
``<m>.lora_B``      loraplus_ratio * lr of m (LoRA+)   weight_decay
``<m>.magnitude``   lr of m (DoRA)                     0
``head``            head_lr (default lr)               weight_decay
``head.bias``       head_lr                            0
``all``             lr  (targets=all baseline)         weight_decay
``all.no_decay``    lr  (1-D: biases, norms)           0
==================  =================================  ==============

Each lr is computed as ``(lr * role_ratio) * matrix_ratio`` so that ``lr_V == lambda * lr_Q`` holds exactly
in floating point for every role (IEEE multiplication is commutative).
"""

from __future__ import annotations

from .adapters import Adapted
from .config import FinetuneConfig

ROLE_SUFFIX = {"weight": "", "bias": ".bias", "lora_A": ".lora_A", "lora_B": ".lora_B", "magnitude": ".magnitude"}
NO_DECAY_ROLES = ("bias", "magnitude")


def param_groups(adapted: Adapted, cfg: FinetuneConfig) -> list[dict]:
    matrix_ratio = {"q": 1.0, "k": cfg.k_lr_ratio, "v": cfg.v_lr_ratio, "o": 1.0}
    groups: dict[str, dict] = {}
    for t in adapted.trained:
        if not t.param.requires_grad:
            continue
        if t.group == "head":
            name = "head" + (".bias" if t.role == "bias" else "")
            lr = cfg.head_lr_value
        elif t.group == "all":
            name = "all" + (".no_decay" if t.role == "bias" else "")
            lr = cfg.lr
        else:
            name = t.group + ROLE_SUFFIX[t.role]
            role_ratio = cfg.loraplus_ratio if t.role == "lora_B" else 1.0
            lr = (cfg.lr * role_ratio) * matrix_ratio[t.group]
        wd = 0.0 if t.role in NO_DECAY_ROLES else cfg.weight_decay
        g = groups.setdefault(name, {"name": name, "lr": lr, "weight_decay": wd, "params": []})
        g["params"].append(t.param)
    return list(groups.values())


def describe_groups(groups: list[dict]) -> list[dict]:
    return [{"name": g["name"], "lr": g["lr"], "weight_decay": g["weight_decay"],
             "tensors": len(g["params"]), "params": sum(p.numel() for p in g["params"])} for g in groups]
