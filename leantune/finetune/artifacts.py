"""What a fine-tuning run leaves behind, and how to use it again.

``adapter/`` holds only the trained tensors (``adapter.safetensors``; matrices as logical ``[out, in]``
blocks keyed ``layers.<i>.<q|k|v|o>.<weight|bias|lora_A|lora_B|magnitude>``, head tensors as
``head.<name>``) and ``leantune_adapter.json`` naming the base model, targets, method and ratios.
For LoRA on unfused matrices we also write a PEFT-format directory that ``PeftModel.from_pretrained``
loads. A ``Trainer``'s ``save_model`` folder (or checkpoint) of an ``AdaptedModel`` is an adapter too: its
``model.safetensors`` holds the trained tensors and the manifest (see ``EMBEDDED_META``). Everything is
safetensors + JSON: nothing here is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..arch import head_modules
from ..errors import LeantuneError
from ..schema import BOOL, INT, LIST, NUMBER, TEXT, check_fields
from .adapters import Adapted, attach

TENSORS = "adapter.safetensors"
META = "leantune_adapter.json"
FORMAT = "leantune-adapter/1"
# A Trainer saves a model it does not know (an AdaptedModel) as its state_dict in model.safetensors, and
# nothing else. So that folder is an adapter too, the state_dict carries the manifest as one more entry:
# the JSON of leantune_adapter.json as a uint8 tensor under this key.
TRAINER_TENSORS = "model.safetensors"
EMBEDDED_META = "leantune_adapter.json"


def manifest(adapted: Adapted, meta: dict) -> dict:
    """The content of ``leantune_adapter.json``: how the adapter was attached, plus ``meta``."""
    return {"format": FORMAT, "targets": adapted.targets, "method": adapted.method, "rank": adapted.rank,
            "alpha": adapted.alpha, "dropout": adapted.dropout, "model_type": adapted.model.config.model_type,
            "train_head": any(t.group == "head" for t in adapted.trained), **meta}


def manifest_tensor(full_meta: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(full_meta, sort_keys=True).encode("utf-8")), dtype=torch.uint8)


def manifest_from_tensor(t: torch.Tensor) -> dict:
    return json.loads(bytes(t.to(torch.uint8).tolist()).decode("utf-8"))


def save_adapter(adapted: Adapted, out_dir: str | Path, meta: dict) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(adapted.state_dict(), str(out_dir / TENSORS), metadata={"format": FORMAT})
    (out_dir / META).write_text(json.dumps(manifest(adapted, meta), indent=2) + "\n", encoding="utf-8")
    return out_dir


def dir_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def can_export_peft(adapted: Adapted) -> bool:
    """PEFT wraps whole modules: exportable when every LoRA target is a whole nn.Linear (no fused slice)."""
    from .methods import get_method

    mats = [t.matrix for t in adapted.trained if t.matrix is not None]
    return get_method(adapted.method).peft_exportable and bool(mats) and \
        all(not m.fused and not m.transposed for m in mats)


PEFT_TASK = {"seq-cls": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "base": "FEATURE_EXTRACTION"}


def export_peft(adapted: Adapted, out_dir: str | Path, base_model: str, head: str = "seq-cls") -> Path:
    """A PEFT LoRA adapter with the same tensors: same scale alpha/r, a trained head as modules_to_save.

    ``base_model`` becomes ``base_model_name_or_path``, which ``AutoPeftModel*.from_pretrained`` loads: give
    it as a user names the model elsewhere (``leantune.models.portable_name``). ``head``: the task type."""
    from peft import LoraConfig

    if not can_export_peft(adapted):
        raise LeantuneError("only LoRA on unfused matrices has a PEFT equivalent (fused slices and DoRA "
                            "magnitudes on slices do not); use the leantune adapter")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, targets = {}, []
    for t in adapted.trained:
        v = t.param.detach().contiguous().cpu().clone()
        if t.matrix is not None:
            targets.append(t.matrix.module_path)
            tensors[f"base_model.model.{t.matrix.module_path}.{t.role}.weight"] = v
        else:  # head: PEFT saves modules_to_save under their own names
            tensors[f"base_model.model.{t.key.removeprefix('head.')}"] = v
    head_trained = any(t.matrix is None for t in adapted.trained)
    config = LoraConfig(task_type=PEFT_TASK.get(head, "SEQ_CLS"), r=adapted.rank, lora_alpha=adapted.alpha,
                        lora_dropout=adapted.dropout, target_modules=sorted(set(targets)),
                        modules_to_save=sorted(head_modules(adapted.model)) if head_trained else None, bias="none",
                        base_model_name_or_path=base_model)
    config.save_pretrained(str(out_dir))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out_dir


def _trainer_manifest(adapter_dir: Path) -> dict | None:
    """The manifest embedded in a Trainer's ``model.safetensors`` of an AdaptedModel, if that is what it is."""
    from safetensors import SafetensorError, safe_open

    path = adapter_dir / TRAINER_TENSORS
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            if EMBEDDED_META not in f.keys():
                return None
            return manifest_from_tensor(f.get_tensor(EMBEDDED_META))
    except (SafetensorError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LeantuneError(f"{path} cannot be read ({e}); the file is damaged or incomplete") from None


def read_meta(adapter_dir: str | Path) -> dict:
    """The manifest of an adapter folder: ``leantune finetune``'s ``adapter/``, a folder written by
    ``save_adapters`` / ``AdaptedModel.save_pretrained``, or ``Trainer.save_model`` output and checkpoints."""
    adapter_dir = Path(adapter_dir)
    meta_path = adapter_dir / META
    if not meta_path.is_file() or not (adapter_dir / TENSORS).is_file():
        meta = _trainer_manifest(adapter_dir)
        if meta is not None:
            check_manifest(meta, adapter_dir / TRAINER_TENSORS)
            return meta
        hint = " (this looks like a PEFT adapter: load it with PeftModel.from_pretrained)" \
            if (adapter_dir / "adapter_config.json").is_file() else ""
        raise LeantuneError(f"{adapter_dir} is not a leantune adapter: it needs {META} and {TENSORS} (or a "
                            f"Trainer's {TRAINER_TENSORS} of a model from leantune.attach_adapters){hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LeantuneError(f"{meta_path} is not valid JSON ({e})") from None
    check_manifest(meta, meta_path)
    return meta


# what load_adapter needs from leantune_adapter.json (save_adapter writes all of it)
MANIFEST_FIELDS = {"format": TEXT, "base_model": TEXT, "method": TEXT, "rank": INT,
                   "alpha": NUMBER, "dropout": NUMBER, "num_labels": INT}
MANIFEST_OPTIONAL = {"pad_token_id": INT, "labels": LIST, "tokenizer": TEXT, "trust_remote_code": BOOL,
                     "train_head": BOOL}  # absent in adapters written before it was recorded: the head trained


def check_manifest(meta, meta_path: Path) -> None:
    from .config import METHODS, TARGETS

    if isinstance(meta, dict) and meta.get("format") != FORMAT:
        raise LeantuneError(f"{meta_path}: unknown format {meta.get('format')!r}, expected {FORMAT}")
    check_fields(meta, str(meta_path), MANIFEST_FIELDS, MANIFEST_OPTIONAL)
    targets = meta.get("targets")  # a preset name, or a list of logical matrix names
    named = isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)
    if not (targets in TARGETS or named) or meta["method"] not in METHODS:
        raise LeantuneError(f"{meta_path}: targets {targets!r} / method {meta['method']!r}: expected one of "
                            f"{', '.join(TARGETS)} (or a list of matrix names) / {', '.join(METHODS)}")
    if meta["rank"] < 1 or meta["num_labels"] < 1 or not 0 <= meta["dropout"] < 1:
        raise LeantuneError(f"{meta_path}: rank and num_labels must be >= 1 and dropout in [0, 1); got rank "
                            f"{meta['rank']}, num_labels {meta['num_labels']}, dropout {meta['dropout']}")


def read_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError

    path = Path(adapter_dir) / TENSORS
    if not path.is_file():  # a Trainer's folder: its state_dict, the manifest entry aside
        path = Path(adapter_dir) / TRAINER_TENSORS
    try:
        tensors = load_file(str(path))
        tensors.pop(EMBEDDED_META, None)
        return tensors
    except SafetensorError as e:
        raise LeantuneError(f"{path} cannot be read ({e}); the file is damaged or incomplete: "
                            "copy it again or rerun the fine-tuning") from None


def load_adapter(adapter_dir: str | Path, base_model: str | None = None, model=None, dtype: str = "float32",
                 device: str | None = None):
    """Base model + adapter, unmerged: returns (model, adapted, meta). ``model`` skips loading the base."""
    from ..models import load_model

    meta = read_meta(adapter_dir)
    tensors = read_tensors(Path(adapter_dir))  # before the base model loads: a damaged file fails fast
    head = meta.get("head", "seq-cls")  # causal-lm: an --objective lm run, no task head
    if model is None:
        model = load_model(base_model or recorded_base_name(meta), head=head, dtype=dtype, device=device,
                           num_labels=meta["num_labels"] if head == "seq-cls" else None,
                           trust_remote_code=meta.get("trust_remote_code", False))
    if meta.get("pad_token_id") is not None:
        model.config.pad_token_id = meta["pad_token_id"]
    adapted = attach(model, meta["targets"], meta["method"], meta["rank"], meta["alpha"], meta["dropout"],
                     train_head=meta.get("train_head") is not False)
    adapted.load_state_dict(tensors)
    labels = meta.get("labels")
    if labels and head == "seq-cls":
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {v: i for i, v in enumerate(labels)}
    return model.eval(), adapted, meta


def recorded_base_name(meta: dict) -> str:
    """The base model to load for a manifest: the alias it was trained through when that is installed here
    (the exact weights, e.g. a dequantized GGUF), else the recorded name (a hub id or an absolute path)."""
    from ..aliases import ALIASES

    alias = (meta.get("base_model_source") or {}).get("alias")
    if alias in ALIASES and ALIASES[alias].locate() is not None:
        return alias
    return meta["base_model"]


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base_model: str | None = None,
                  dtype: str = "auto", device: str | None = None, overwrite: bool = False) -> Path:
    """Fold the adapter into its base model and write a dense model with ``save_pretrained``.

    ``dtype="auto"`` keeps the base checkpoint's dtype (the adapter is merged in that dtype). ``out_dir`` follows
    the output-folder policy (:mod:`leantune.outputs`): never the base model's folder, whose adapter would then
    be applied twice by the next merge."""
    folder = merge_output_folder(adapter_dir, out_dir, base_model, overwrite)  # refused before anything loads
    model, _, meta = merged_adapter(adapter_dir, base_model, dtype=dtype, device=device)
    return save_merged(model, meta, folder, base_model)


def merge_output_folder(adapter_dir: str | Path, out_dir: str | Path, base_model: str | None = None,
                        overwrite: bool = False):
    """The output folder of a merge, checked against the policy (never the base model's own folder)."""
    from ..models import input_path
    from ..outputs import OutputFolder

    meta = read_meta(adapter_dir)
    return OutputFolder(out_dir, "merge", overwrite=overwrite,
                        inputs={"adapter": adapter_dir, "base model": input_path(base_model or recorded_base_name(meta))})


def merged_adapter(adapter_dir: str | Path, base_model: str | None = None, dtype: str = "auto",
                   device: str | None = None):
    """(model with the adapter folded in, the Adapted record of what was trained, the adapter's meta)."""
    model, adapted, meta = load_adapter(adapter_dir, base_model, dtype=dtype, device=device)
    adapted.merge()
    return model, adapted, meta


def save_merged(model, meta: dict, folder, base_model: str | None = None) -> Path:
    """Write the merged ``model`` atomically into ``folder`` (a :func:`merge_output_folder`) with its tokenizer."""
    from ..models import load_tokenizer, recorded_base

    # provenance inside the merged model's config.json: the base as named elsewhere, and the adapter's recipe
    model.config.leantune_base_model = {**recorded_base(model), "adapter": {
        k: meta.get(k) for k in ("targets", "method", "rank", "alpha", "task", "objective")}}
    with folder as stage:
        model.save_pretrained(str(stage))  # safetensors
        tok_src = meta.get("tokenizer") or base_model or recorded_base_name(meta)
        if tok_src != "gpt2-offline":
            try:
                load_tokenizer(tok_src, meta.get("trust_remote_code", False)).save_pretrained(str(stage))
            except LeantuneError:
                pass  # a model without a tokenizer of its own (e.g. a random test model) still merges
    return Path(folder.out)


@torch.no_grad()
def predict_logits(model, batch: dict) -> torch.Tensor:
    model.eval()
    return model(**{k: v for k, v in batch.items() if k != "labels"}).logits
