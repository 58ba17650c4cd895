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
``all.lora_A|B``    lr / loraplus_ratio * lr           weight_decay  (PEFT LoRA outside attention)
==================  =================================  ==============

Each lr is computed as ``(lr * role_ratio) * matrix_ratio`` so that ``lr_V == lambda * lr_Q`` holds exactly
in floating point for every role (IEEE multiplication is commutative).
"""

from __future__ import annotations

from .adapters import Adapted
from .config import FinetuneConfig
from .methods import Trained

ROLE_SUFFIX = {"weight": "", "bias": ".bias", "lora_A": ".lora_A", "lora_B": ".lora_B", "magnitude": ".magnitude"}
NO_DECAY_ROLES = ("bias", "magnitude")


def param_groups(adapted: Adapted, cfg: FinetuneConfig) -> list[dict]:
    return build_groups(adapted.trained, cfg.lr, cfg.v_lr_ratio, cfg.k_lr_ratio, cfg.head_lr_value,
                        cfg.loraplus_ratio, cfg.weight_decay)


def build_groups(trained: list[Trained], lr: float, v_ratio: float = 4.0, k_ratio: float = 1.0,
                 head_lr: float | None = None, loraplus_ratio: float = 1.0, weight_decay: float = 0.0) -> list[dict]:
    """The groups of the table above for these trained tensors (frozen ones are skipped)."""
    matrix_ratio = {"q": 1.0, "k": k_ratio, "v": v_ratio, "o": 1.0}
    head_lr = lr if head_lr is None else head_lr
    groups: dict[str, dict] = {}
    for t in trained:
        if not t.param.requires_grad:
            continue
        if t.group == "head":
            name = "head" + (".bias" if t.role == "bias" else "")
            group_lr = head_lr
        elif t.group == "all" and t.role in ("lora_A", "lora_B"):  # adapters outside q/k/v/o (PEFT on an MLP)
            name = "all" + ROLE_SUFFIX[t.role]
            group_lr = lr * (loraplus_ratio if t.role == "lora_B" else 1.0)
        elif t.group == "all":
            name = "all" + (".no_decay" if t.role == "bias" else "")
            group_lr = lr
        else:
            name = t.group + ROLE_SUFFIX[t.role]
            role_ratio = loraplus_ratio if t.role == "lora_B" else 1.0
            group_lr = (lr * role_ratio) * matrix_ratio.get(t.group, 1.0)  # other matrices (mlp_in, ...): lr
        wd = 0.0 if t.role in NO_DECAY_ROLES else weight_decay
        g = groups.setdefault(name, {"name": name, "lr": group_lr, "weight_decay": wd, "params": []})
        g["params"].append(t.param)
    return list(groups.values())


def describe_groups(groups: list[dict]) -> list[dict]:
    return [{"name": g["name"], "lr": g["lr"], "weight_decay": g["weight_decay"],
             "tensors": len(g["params"]), "params": sum(p.numel() for p in g["params"])} for g in groups]
