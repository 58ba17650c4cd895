"""The fine-tuning engine as a library: optimizer groups and adapters for your own Trainer or loop.

* :func:`qv_param_groups` / :func:`create_optimizer`: ``lr_V = v_ratio * lr_Q`` (and K, head, LoRA+ B,
  no decay on biases and DoRA magnitudes) for whatever trains in ``model``: a plain transformers model
  with some matrices trainable, a PEFT ``PeftModel`` with LoRA/DoRA on unfused q/v modules, or a model
  from :func:`attach_adapters`. Which tensor belongs to W_q or W_v is asked of the architecture map
  (``get_arch(model).matrix(layer, "v")``), never read off parameter names.
* :func:`attach_adapters`: leantune's own adapters (fused Q/V slices included), with the CLI's defaults
  (:class:`~leantune.finetune.config.AdapterConfig`), returned as :class:`AdaptedModel`.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..arch import ATTN, get_arch, head_parameters
from ..errors import LeantuneError
from .adapters import Adapted, attach
from .config import AdapterConfig
from .groups import build_groups
from .methods import Trained


# What an AdaptedModel answers from the wrapped model: what describes it (config, device, dtype, quantization,
# parallelism: the Trainer and accelerate read these) and what acts on it exactly as on the adapted model
# (generate and the embeddings run through the adapters, which live inside its modules). Anything else would
# act on the base model without the adapters' meaning (push_to_hub would upload the base weights with private
# leantune keys, resize_token_embeddings would change what the adapter was trained on): refused, by name.
PASS_THROUGH = frozenset({
    "config", "generation_config", "name_or_path", "device", "dtype", "main_input_name", "base_model_prefix",
    "num_parameters", "can_generate", "generate", "prepare_inputs_for_generation", "get_input_embeddings",
    "get_output_embeddings", "gradient_checkpointing_enable", "gradient_checkpointing_disable",
    "is_gradient_checkpointing", "supports_gradient_checkpointing", "enable_input_require_grads",
    "activation_checkpointing_enable", "activation_checkpointing_disable", "is_activation_checkpointing",
    "hf_device_map", "hf_quantizer", "is_quantized", "is_loaded_in_4bit", "is_loaded_in_8bit",
    "quantization_method", "accepts_loss_kwargs", "loss_type", "tp_size", "_tp_size", "_is_replica",
    "is_distributed_loading_by_transformers", "warnings_issued", "model_tags", "_keys_to_ignore_on_save",
    "floating_point_ops", "estimate_tokens", "_supports_cache_class", "_is_stateful", "_supports_default_dynamic_cache",
})


class AdaptedModelAttributeError(AttributeError):
    """An attribute of the wrapped model that an adapted model does not pass through (see PASS_THROUGH)."""


class AdaptedModel(nn.Module):
    """A model with leantune adapters attached; call it, train it, hand it to a ``Trainer`` as the model.

    It answers what describes the wrapped model (``config``, ``generation_config``, ``device``, ...; see
    ``PASS_THROUGH``) and runs ``generate``; every other attribute of the wrapped model is refused with an
    ``AttributeError`` saying to use :meth:`get_base_model` (or :meth:`merge`), never silently passed through.
    ``state_dict()`` / ``load_state_dict()`` hold only the trained tensors under the keys of leantune's adapter
    file (``layers.3.v.lora_A``, ``head.score.weight``; matrices as ``[out, in]``) plus the manifest
    (``leantune_adapter.json``, as a uint8 tensor), so a ``Trainer``'s ``save_model`` output and its
    checkpoints are adapters that ``leantune merge`` and :func:`load_adapters` read, and resume. Saving:
    :meth:`save_pretrained` / :func:`save_adapters` (leantune's files plus a PEFT adapter where the method
    allows), :meth:`push_to_hub`; :meth:`merge` folds the adapters in and returns the plain model.
    """

    def __init__(self, model: nn.Module, adapted: Adapted):
        super().__init__()
        self.model = model
        self.__dict__["adapted"] = adapted  # a plain object, not a submodule (its tensors live in `model`)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            base = self._modules["model"]
            if name in PASS_THROUGH:
                return getattr(base, name)
            if not hasattr(base, name):
                raise
            raise AdaptedModelAttributeError(
                f"{type(self).__name__} does not pass '{name}' through to the wrapped {type(base).__name__}: it "
                "would act on the base model without the adapters. Use model.get_base_model()." f"{name} for the "
                "base model, model.merge() for a plain model with the adapters folded in, or leantune.save_adapters "
                "/ model.save_pretrained / model.push_to_hub to share the adapter") from None

    def get_base_model(self) -> nn.Module:
        """The wrapped transformers model (also what ``get_arch`` describes)."""
        return self.model

    @property
    def trained(self) -> list[Trained]:
        return self.adapted.trained

    @property
    def num_trainable(self) -> int:
        return self.adapted.num_trainable

    def adapter_manifest(self, **meta) -> dict:
        """The content of ``leantune_adapter.json`` for this model (base model, head, labels, method, ...)."""
        from ..models import recorded_base
        from .artifacts import manifest

        cfg = self.model.config
        labels = [cfg.id2label[i] for i in sorted(cfg.id2label)] if getattr(cfg, "id2label", None) else None
        base = recorded_base(self.model)
        info = {"base_model": base["name"], "base_model_source": base, "head": _head_kind(self.model),
                "num_labels": getattr(cfg, "num_labels", None), "labels": labels,
                "pad_token_id": getattr(cfg, "pad_token_id", None), **meta}
        return manifest(self.adapted, info)

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        from .artifacts import EMBEDDED_META, manifest_tensor

        tensors = self.adapted.state_dict()
        out = destination if destination is not None else {}
        for k, v in tensors.items():
            out[prefix + k] = v
        out[prefix + EMBEDDED_META] = manifest_tensor(self.adapter_manifest())
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        from torch.nn.modules.module import _IncompatibleKeys

        from .artifacts import EMBEDDED_META, manifest_from_tensor

        tensors = dict(state_dict)
        saved = tensors.pop(EMBEDDED_META, None)
        if saved is not None:  # a checkpoint of another adapter set-up must not load into this one
            had, mine = manifest_from_tensor(saved), self.adapter_manifest()
            differ = [k for k in ("targets", "method", "rank", "alpha", "model_type")
                      if json_value(had.get(k)) != json_value(mine.get(k))]
            if differ:
                raise LeantuneError(f"the saved adapter differs from this model's adapters in {', '.join(differ)}: "
                                    + ", ".join(f"{k} {had.get(k)!r} vs {mine.get(k)!r}" for k in differ))
        self.adapted.load_state_dict(tensors)  # always strict: a partial adapter is a mistake
        return _IncompatibleKeys([], [])

    def save_pretrained(self, save_directory, peft: bool = True, **meta) -> Path:
        """Write the adapter into ``save_directory``: ``adapter.safetensors`` + ``leantune_adapter.json`` (what
        ``leantune merge`` and :func:`load_adapters` read) and, when ``peft`` and the method allows (LoRA on
        unfused matrices), PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` beside them."""
        return save_adapters(self, save_directory, peft=peft, **meta)

    def push_to_hub(self, repo_id: str, *, peft: bool = True, private: bool | None = None, token=None,
                    commit_message: str = "Upload leantune adapter", revision: str | None = None, **meta):
        """Upload the adapter folder :meth:`save_pretrained` writes (never the base model) to ``repo_id``,
        through ``huggingface_hub`` (``create_repo`` + ``upload_folder``); returns the commit info."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="leantune-push-") as tmp:
            self.save_pretrained(tmp, peft=peft, **meta)
            api.create_repo(repo_id, private=private, exist_ok=True)
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message,
                                     revision=revision)

    def merge(self) -> nn.Module:
        """Fold the adapters into the weights; returns the wrapped model, a plain transformers model again."""
        return self.adapted.merge()


def json_value(v):
    """Tuples and lists compare equal (the manifest went through JSON)."""
    return list(v) if isinstance(v, tuple) else v


def save_adapters(model: AdaptedModel, out_dir, peft: bool = True, **meta) -> Path:
    """Save the adapters of ``model`` (from :func:`attach_adapters`) into ``out_dir``.

    Writes ``adapter.safetensors`` + ``leantune_adapter.json`` (read by :func:`load_adapters` and
    ``leantune merge --adapter``; the base model recorded as a user names it elsewhere: the hub id of an
    alias, an absolute local path) and, when ``peft`` and the method allows it (LoRA on whole, unfused
    matrices), a PEFT adapter in the same folder (``adapter_config.json`` + ``adapter_model.safetensors``)
    that ``PeftModel.from_pretrained(base, out_dir)`` and ``AutoPeftModel*.from_pretrained(out_dir)`` load.
    ``meta``: extra fields for the manifest (``task``, ...). Returns ``out_dir``.
    """
    from .artifacts import can_export_peft, export_peft, save_adapter

    if not isinstance(model, AdaptedModel):
        raise LeantuneError(f"save_adapters takes a model from leantune.attach_adapters (or load_adapters), got "
                            f"{type(model).__name__}; a PeftModel saves itself with save_pretrained")
    info = model.adapter_manifest(**meta)
    out = save_adapter(model.adapted, out_dir, {k: v for k, v in info.items()
                                                if k not in ("format", "targets", "method", "rank", "alpha",
                                                             "dropout", "model_type")})
    if peft and can_export_peft(model.adapted):
        export_peft(model.adapted, out, info["base_model"], head=info["head"])
    return out


def load_adapters(base, adapter_dir, dtype: str = "float32", device: str | None = None) -> AdaptedModel:
    """The adapted model saved in ``adapter_dir`` (by :func:`save_adapters`, ``leantune finetune``'s
    ``adapter/``, or a ``Trainer``'s ``save_model`` / checkpoint of an adapted model).

    ``base``: a loaded transformers model to attach the adapters to, a model name (alias, hub id, folder),
    or ``None`` for the base model the adapter records (loaded with its head).
    """
    from .artifacts import load_adapter

    if base is not None and not isinstance(base, (str, Path, nn.Module)):
        raise LeantuneError(f"load_adapters: base must be a loaded model, a model name or None, got "
                            f"{type(base).__name__}")
    if isinstance(base, AdaptedModel):
        raise LeantuneError("load_adapters: base already carries adapters; pass the plain model "
                            "(model.get_base_model() before attaching, or a freshly loaded one)")
    model = base if isinstance(base, nn.Module) else None
    name = str(base) if isinstance(base, (str, Path)) else None
    loaded, adapted, _ = load_adapter(adapter_dir, base_model=name, model=model, dtype=dtype, device=device)
    return adapted_class(type(loaded))(loaded, adapted)


_CLASSES: dict[type, type] = {}


def adapted_class(model_cls: type) -> type:
    """``AdaptedModel`` whose ``forward`` has the signature of ``model_cls.forward``, for each model class.

    The Trainer reads it to keep dataset columns (``input_ids``, ...) and to find the label names
    (``labels``): with a bare ``*args, **kwargs`` it would drop every column and never compute eval loss.
    """
    if model_cls not in _CLASSES:
        def forward(self, *args, **kwargs):
            return self.model(*args, **kwargs)

        forward.__signature__ = inspect.signature(model_cls.forward)
        forward.__doc__ = model_cls.forward.__doc__
        _CLASSES[model_cls] = type(f"Adapted{model_cls.__name__}", (AdaptedModel,),
                                   {"forward": forward, "__module__": __name__})
    return _CLASSES[model_cls]


def _head_kind(model: nn.Module) -> str:
    name = type(model).__name__
    return "seq-cls" if name.endswith("ForSequenceClassification") else \
        "causal-lm" if name.endswith(("ForCausalLM", "LMHeadModel")) else "base"


def attach_adapters(model: nn.Module, config: AdapterConfig | None = None, **overrides) -> AdaptedModel:
    """Freeze ``model`` and attach trainable parts to the chosen logical matrices (and the task head).

    ``attach_adapters(model, AdapterConfig(targets=("q", "v"), method="lora", rank=8))``; keyword
    ``overrides`` replace single fields (``attach_adapters(model, method="dora")``). Defaults are the CLI's.
    """
    from ..model_fit import check_model

    if isinstance(model, AdaptedModel):
        raise LeantuneError("attach_adapters: this model already carries leantune adapters; attach once (or merge() "
                            "first)")
    check_model(model, "any", "attach_adapters")
    cfg = AdapterConfig(**{**(vars(config) if config is not None else {}), **overrides}).check()
    adapted = attach(model, cfg.targets, cfg.method, cfg.rank, cfg.alpha, cfg.dropout, train_head=cfg.train_head)
    return adapted_class(type(model))(model, adapted)


# --- what trains in a model, asked of the architecture map ----------------------------------------------------
def _is_peft_lora(module: nn.Module) -> bool:
    # PEFT's LoraLayer API (lora.Linear, lora.Embedding, ...): adapters in ModuleDicts keyed by adapter name
    return hasattr(module, "base_layer") and isinstance(getattr(module, "lora_A", None), nn.ModuleDict)


def _same_ratio(m) -> bool:
    """A fused weight whose parts all get the same lr (e.g. an MLP's gate|up) can train as one tensor."""
    return all(n not in ATTN for n in (m.name,) + m.fused_with)


def trained_tensors(model: nn.Module) -> list[Trained]:
    """Every trainable tensor of ``model``, each with its group (q, k, v, o, head, all) and role.

    Works on a plain transformers model, a ``PeftModel`` and a model carrying leantune adapters (attached
    with :func:`attach_adapters`, whose own record is used as is). Raises when a trainable tensor mixes
    Q, K and V rows (a whole fused ``c_attn`` weight, or PEFT LoRA on it), since no lr ratio can apply.
    """
    if isinstance(model, AdaptedModel):
        return list(model.adapted.trained)
    arch = get_arch(model)
    names = {id(p): n for n, p in model.named_parameters()}
    seen: set[int] = set()
    out: list[Trained] = []

    def add(group: str, role: str, p: nn.Parameter, m=None) -> None:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(Trained(names.get(id(p), f"{group}.{role}"), group, role, p, m))

    for m in arch.matrices():  # every logical matrix: q, k, v, o and the MLP ones (those train at lr)
        mod = m.module
        lora = getattr(mod, "leantune_lora", None)
        if lora is not None and m.name in lora.lora_A:  # leantune LoRA / DoRA (fused slices too)
            add(m.name, "lora_A", lora.lora_A[m.name], m)
            add(m.name, "lora_B", lora.lora_B[m.name], m)
            if m.name in lora.magnitude:
                add(m.name, "magnitude", lora.magnitude[m.name], m)
        elif parametrize.is_parametrized(mod):  # leantune `full` on fused slices: one copy per part
            for tensor_name, plist in mod.parametrizations.items():
                part = getattr(plist[0], f"part_{m.name}", None)
                if part is not None:
                    add(m.name, "bias" if tensor_name == "bias" else "weight", part, m)
        elif _is_peft_lora(mod):
            if m.fused and not _same_ratio(m):
                continue  # left to the check below: an error only if it trains
            for key in mod.lora_A:
                add(m.name, "lora_A", mod.lora_A[key].weight, m)
                add(m.name, "lora_B", mod.lora_B[key].weight, m)
                magnitudes = getattr(mod, "lora_magnitude_vector", None) or {}
                if key in magnitudes:  # DoRA
                    add(m.name, "magnitude", magnitudes[key].weight, m)
            base = mod.base_layer
            add(m.name, "weight", base.weight, m)
            if getattr(base, "bias", None) is not None:
                add(m.name, "bias", base.bias, m)
        else:  # the matrix itself
            if m.fused and not _same_ratio(m):
                continue  # left to the check below: an error only if it trains
            add(m.name, "weight", m.weight, m)
            if m.bias is not None:
                add(m.name, "bias", m.bias, m)
    for m in arch.matrices(names=[n for n in ATTN if n in arch.names]):
        if m.fused and not _same_ratio(m) and any(p.requires_grad and id(p) not in seen for p in m.module.parameters()):
            how = "PEFT's LoRA on it trains them together" if _is_peft_lora(m.module) else "it trains as one tensor"
            raise LeantuneError(f"{m.module_path} holds {'/'.join((m.name,) + m.fused_with)} in one weight and {how}, "
                                "so lr_V != lr_Q cannot apply; use leantune.attach_adapters (method 'full', 'lora' "
                                "or 'dora' on the Q and V slices only)")
    for name, p in head_parameters(model).items():
        add("head", "bias" if p.ndim < 2 else "weight", p)
    for mod in model.modules():  # PEFT LoRA elsewhere (MLP, embeddings): lr, LoRA+ on B
        if _is_peft_lora(mod):
            for key in mod.lora_A:
                add("all", "lora_A", mod.lora_A[key].weight)
                add("all", "lora_B", mod.lora_B[key].weight)
            for key in getattr(mod, "lora_embedding_A", {}):  # lora.Embedding keeps plain parameters
                add("all", "lora_A", mod.lora_embedding_A[key])
                add("all", "lora_B", mod.lora_embedding_B[key])
    for name, p in model.named_parameters():  # anything else that trains (embeddings, norms, MLP): lr
        add("all", "bias" if p.ndim < 2 else "weight", p)
    return out


def qv_param_groups(model: nn.Module, lr: float, v_ratio: float = 4.0, k_ratio: float = 1.0,
                    head_lr: float | None = None, loraplus_ratio: float = 1.0,
                    weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups with ``lr_V = v_ratio * lr_Q`` for every trainable tensor of ``model``.

    Groups (each a dict with ``name``, ``lr``, ``weight_decay``, ``params``): ``q``, ``k`` (``k_ratio * lr``),
    ``v`` (``v_ratio * lr``), ``o`` and their ``.bias`` / ``.lora_A`` / ``.lora_B`` (LoRA+:
    ``loraplus_ratio`` times the matrix's lr) / ``.magnitude`` (DoRA) variants, ``head`` (``head_lr``,
    default ``lr``) and ``all`` for anything else that trains. Biases and magnitudes never decay.
    """
    from ..model_fit import check_model

    check_model(model, "any", "qv_param_groups / create_optimizer")
    _check_rates("qv_param_groups", lr, v_ratio, k_ratio, head_lr, loraplus_ratio, weight_decay)
    groups = build_groups(trained_tensors(model), lr, v_ratio, k_ratio, head_lr, loraplus_ratio, weight_decay)
    if not groups:
        raise LeantuneError("nothing in the model is trainable: attach adapters or set requires_grad first")
    return groups


def create_optimizer(model: nn.Module, optimizer_cls=torch.optim.AdamW, *, lr: float, v_ratio: float = 4.0,
                     k_ratio: float = 1.0, head_lr: float | None = None, loraplus_ratio: float = 1.0,
                     weight_decay: float = 0.0, **optimizer_kwargs) -> torch.optim.Optimizer:
    """An optimizer over :func:`qv_param_groups`, e.g. for ``Trainer(optimizers=(opt, None))``.

    The analogue of PEFT's ``create_loraplus_optimizer(model, optimizer_cls, lr=..., loraplus_lr_ratio=...)``;
    ``optimizer_kwargs`` (``betas``, ``eps``, ...) go to ``optimizer_cls``.
    """
    _check_rates("create_optimizer", lr, v_ratio, k_ratio, head_lr, loraplus_ratio, weight_decay)
    groups = qv_param_groups(model, lr, v_ratio, k_ratio, head_lr, loraplus_ratio, weight_decay)
    return optimizer_cls(groups, lr=lr, **optimizer_kwargs)


def _check_rates(func: str, lr, v_ratio, k_ratio, head_lr, loraplus_ratio, weight_decay) -> None:
    """The command line's rules (finite, > 0, a number and not a string): a NaN lr never reaches a group."""
    from ..validate import check_call

    if lr is None:
        raise LeantuneError(f"{func}() argument lr is required (a finite number > 0)")
    check_call(func, lr=lr, v_ratio=v_ratio, k_ratio=k_ratio, head_lr=head_lr, loraplus_ratio=loraplus_ratio,
               weight_decay=weight_decay)
