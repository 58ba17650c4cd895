"""Recipe of ``leantune finetune`` (and ``merge``): data -> model -> trainable parts -> HF Trainer -> outputs.

Training runs on the HF Trainer, so ``accelerate launch`` / ``torchrun`` give data-parallel training
unchanged (gloo on CPU). The finetune engine supplies the optimizer groups (from the architecture map,
``finetune/groups.py``), the adapters, and the Trainer subclass with its NaN/inf guard and step timer.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LeantuneError
from ..finetune.adapters import Adapted, attach
from ..finetune.artifacts import can_export_peft, dir_bytes, export_peft, save_adapter
from ..finetune.config import FinetuneConfig
from ..finetune.data import load_data
from ..finetune.objectives import get_objective
from ..finetune.groups import describe_groups, param_groups
from ..finetune.trainer import default_eval_every, peak_rss_mb, trainer_classes, _non_finite
from ..model_fit import check_vocab_fits, fit_max_length
from ..gguf_write import GGUF_TYPES
from ..models import base_model_record, input_path, model_source, tokenizer_for
from .common import Recipe, overwrite_option
from ..options import option
from ..outputs import OutputFolder
from ..runinfo import versions  # one record of library versions for every command


def finetune(cfg: FinetuneConfig, model=None, tokenizer=None) -> dict:
    """Run one fine-tuning job; writes its outputs under ``cfg.out`` (rank 0) and returns metrics.json's dict."""
    from transformers import set_seed

    from ..models import load_model

    cfg.check()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cpu = _place(cfg, world)  # before any loading: a flag the machine cannot honour fails at once
    if not cfg.out:
        raise LeantuneError("--out is required: the directory for metrics.json, adapter/ and curves.png")
    out = Path(cfg.out)
    folder = OutputFolder(cfg.out, "finetune", overwrite=cfg.overwrite,
                          inputs={"model": input_path(cfg.model), "train file": cfg.train_file,
                                  "eval file": cfg.eval_file,
                                  "data folder": cfg.data_dir, "tokenizer": cfg.tokenizer})
    objective = get_objective(cfg.objective)
    data = load_data(cfg)
    tokenizer = tokenizer or tokenizer_for(cfg.model, cfg.tokenizer, cfg.trust_remote_code, need_pad=True)
    set_seed(cfg.seed)  # the head's init and LoRA A matrices are seeded, identically on every rank
    classify = objective.head == "seq-cls"
    if model is None:
        model = load_model(cfg.model, head=objective.head, num_labels=len(data.labels) if classify else None,
                           dtype=cfg.dtype, device="cpu", trust_remote_code=cfg.trust_remote_code)  # the Trainer places it
    check_vocab_fits(tokenizer, model, cfg.model, cfg.tokenizer)
    cfg.max_length = fit_max_length(cfg.max_length, model)  # recorded as used in metrics.json and the adapter
    if classify:
        if model.config.num_labels != len(data.labels):
            raise LeantuneError(f"the model has {model.config.num_labels} labels, task {data.task} has "
                                f"{len(data.labels)}")
        model.config.id2label = dict(enumerate(data.labels))
        model.config.label2id = {v: i for i, v in enumerate(data.labels)}
    model.config.pad_token_id = tokenizer.pad_token_id
    train_ds, eval_ds = objective.datasets(data, tokenizer, cfg.max_length)
    icl_before = None if classify else icl_scores(model, tokenizer, cfg)  # the unadapted LM, same examples
    adapted = attach(model, cfg.targets, cfg.method, cfg.rank, cfg.alpha, cfg.dropout,
                     train_head=objective.train_head)
    groups = param_groups(adapted, cfg)

    # rank 0 writes the results: its folder is made (and a write probed) before training, so a location that
    # cannot take the result fails now, not after the run; the Trainer's own output_dir is a temporary folder
    # (nothing is saved there: save_strategy="no"). Both go on every exit path.
    with (folder if int(os.environ.get("RANK", "0")) == 0 else nullcontext()) as stage, \
            tempfile.TemporaryDirectory(prefix="leantune-trainer-") as trainer_dir:
        return _train(cfg, data, tokenizer, model, adapted, groups, world, use_cpu, out, stage, trainer_dir,
                      objective, train_ds, eval_ds, icl_before)


def _train(cfg, data, tokenizer, model, adapted, groups, world, use_cpu, out: Path, stage: Path | None,
           trainer_dir: str, objective, train_ds, eval_ds, icl_before) -> dict:
    from transformers import TrainingArguments

    classify = objective.head == "seq-cls"
    epochs = cfg.epochs if cfg.epochs is not None else (None if cfg.max_steps else 3.0)
    steps_per_epoch = math.ceil(len(train_ds) / (cfg.batch_size * world * cfg.grad_accum))
    total = cfg.max_steps or math.ceil(steps_per_epoch * epochs)
    eval_every = cfg.eval_every or default_eval_every(total, cfg.batch_size * world * cfg.grad_accum, len(eval_ds))

    args = TrainingArguments(
        output_dir=trainer_dir, save_strategy="no", report_to="none", seed=cfg.seed,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup, max_steps=cfg.max_steps or -1, num_train_epochs=epochs or 1.0,
        eval_strategy="steps", eval_steps=eval_every, logging_steps=cfg.log_every, logging_first_step=True,
        disable_tqdm=cfg.quiet, bf16=cfg.bf16, fp16=cfg.fp16, dataloader_num_workers=0,
        logging_nan_inf_filter=False,  # log a NaN/inf loss as it is, so that NonFiniteGuard sees it
        gradient_accumulation_steps=cfg.grad_accum, **_checkpointing(cfg.gradient_checkpointing),
        dataloader_pin_memory=torch.cuda.is_available() and not use_cpu, ddp_find_unused_parameters=False,
        # several CPU processes (torchrun / accelerate launch without GPUs): accelerate needs cpu=True to see
        # MULTI_CPU, and gloo is the CPU backend
        use_cpu=use_cpu, prediction_loss_only=not classify,  # an LM's logits (batch x length x vocab) are not kept
        ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None,
    )
    StepTimer, SelectiveTrainer, NonFiniteGuard = trainer_classes()
    timer = StepTimer()
    trainer = SelectiveTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=objective.collator(tokenizer), processing_class=tokenizer,
        callbacks=[timer, NonFiniteGuard()], compute_metrics=objective.compute_metrics(data),
        leantune_groups=groups,
    )
    if cfg.quiet:  # with the progress bar off, the Trainer prints every log dict instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - t0
    # the last step's update is seen by no later loss: never write weights that became NaN/inf
    bad = next((t.key for t in adapted.trained if not torch.isfinite(t.param).all()), None)
    if bad is not None:
        raise _non_finite(f"trained tensor {bad}", "non-finite", trainer.state.global_step, trainer.optimizer)
    # the periodic evaluation often already ran at the last step: reuse it rather than evaluate twice
    last = [h for h in trainer.state.log_history if "eval_loss" in h]
    if last and last[-1]["step"] == trainer.state.global_step:
        final = {k: v for k, v in last[-1].items() if k.startswith("eval_")}
    else:
        final = trainer.evaluate()

    metrics = {
        "task": data.task, "model": cfg.model, "objective": cfg.objective, "targets": cfg.targets, "method": cfg.method,
        "trainable_params": adapted.num_trainable,
        "total_params": sum(p.numel() for p in model.parameters()),
        "eval": {k.removeprefix("eval_"): v for k, v in final.items()} | {"metric": data.metric},
        "history": _history(trainer.state.log_history),
        "train": {"steps": trainer.state.global_step, "epochs": trainer.state.epoch, "world_size": world,
                  "examples": len(train_ds), "train_loss": result.training_loss, "runtime_s": train_s,
                  "step_time_s_median": statistics.median(timer.times) if timer.times else None,
                  "peak_rss_mb": peak_rss_mb()},
        "optimizer_groups": describe_groups(groups),
        "data": {"train_size": len(data.train), "eval_size": len(data.eval), "labels": list(data.labels),
                 "note": data.note, **data.sources},
        "config": cfg.to_dict(), "model_source": model_source(cfg.model), "versions": versions(), "seed": cfg.seed,
    }
    if not classify:  # the ICL scorer's numbers, as `icl eval` gives them, on the same examples as before
        metrics["icl"] = {"before": icl_before, "after": icl_scores(model, tokenizer, cfg)}
    if stage is not None:
        write_outputs(adapted, cfg, data, tokenizer, metrics, stage, out)
    return metrics


def icl_scores(model, tokenizer, cfg: FinetuneConfig) -> dict:
    """ICL accuracy at 0 shots and at ``cfg.icl_shots`` per class on the task's validation examples (a sample of
    ``max_eval_samples`` drawn with ``cfg.seed`` when given), as `leantune icl eval --shots K --n-eval N --seed S`
    computes it."""
    from ..icl.api import evaluate_icl

    was_training = model.training
    model.eval()  # no adapter dropout while scoring
    out = {}
    for shots in sorted({0, cfg.icl_shots}):
        r = evaluate_icl(model, tokenizer, cfg.task or "sst2", shots=shots, n_eval=cfg.max_eval_samples,
                         seed=cfg.seed, batch_size=cfg.eval_batch_size, data_dir=cfg.data_dir)
        out[str(shots)] = {"accuracy": r["accuracy"], "n": r["n"], "correct": r["correct"]}
    model.train(was_training)
    return out


def _checkpointing(on: bool) -> dict:
    """TrainingArguments for gradient checkpointing, under the name this transformers uses."""
    from transformers import TrainingArguments

    name = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ \
        else "gradient_checkpointing"
    # non-reentrant: the frozen embeddings give no input that requires grad, which reentrant checkpointing needs
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def _place(cfg: FinetuneConfig, world: int) -> bool:
    """Checks the precision/device flags against the machine; True when the Trainer must stay on the CPU."""
    cuda = torch.cuda.is_available()
    dev = (cfg.device or "").lower()
    if cfg.fp16 and (not cuda or dev == "cpu"):
        raise LeantuneError("--fp16 mixed precision needs a CUDA device; on the CPU use --bf16")
    if dev.startswith("cuda"):
        if not cuda:
            raise LeantuneError(f"--device {cfg.device}: CUDA is not available here")
        if ":" in dev and world == 1:
            torch.cuda.set_device(int(dev.split(":", 1)[1]))  # the Trainer's "cuda" is the current device
    elif dev not in ("", "cpu"):
        raise LeantuneError(f"--device {cfg.device}: fine-tuning runs on cpu or cuda[:N]")
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return dev == "cpu" or (not cuda and not mps)  # the Trainer wants use_cpu for bf16 autocast on the CPU


def _history(log_history: list[dict]) -> dict:
    train = [{"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate")} for h in log_history if "loss" in h]
    evals = [{"step": h["step"], **{k.removeprefix("eval_"): v for k, v in h.items() if k.startswith("eval_")}}
             for h in log_history if "eval_loss" in h]
    return {"train": train, "eval": evals}


def write_outputs(adapted: Adapted, cfg: FinetuneConfig, data, tokenizer, metrics: dict, out: Path,
                  final: Path | None = None) -> None:
    """Write the run's files into ``out``; paths recorded in metrics.json name ``final`` (where ``out`` is
    renamed to once complete)."""
    from ..finetune.plot import plot_curves

    final = out if final is None else final
    out.mkdir(parents=True, exist_ok=True)
    base = base_model_record(cfg.model)  # as a user names it elsewhere: an alias's hub id, an absolute path
    meta = {"base_model": base["name"], "base_model_source": base, "head": get_objective(cfg.objective).head,
            "objective": cfg.objective, "task": data.task, "labels": list(data.labels),
            "num_labels": len(data.labels), "text_fields": list(data.text_fields), "max_length": cfg.max_length,
            "tokenizer": cfg.tokenizer, "pad_token_id": tokenizer.pad_token_id,
            "trust_remote_code": cfg.trust_remote_code,
            "lr": cfg.lr, "v_lr_ratio": cfg.v_lr_ratio, "k_lr_ratio": cfg.k_lr_ratio, "head_lr": cfg.head_lr_value,
            "loraplus_ratio": cfg.loraplus_ratio, "seed": cfg.seed}
    adapter_dir = save_adapter(adapted, out / "adapter", meta)
    metrics["artifact_bytes"] = dir_bytes(adapter_dir)
    metrics["adapter_dir"] = str(final / adapter_dir.relative_to(out))
    if cfg.export_peft and meta["head"] == "seq-cls" and can_export_peft(adapted):  # PEFT's task type: SEQ_CLS
        export_peft(adapted, out / "peft_adapter", base["name"])
        metrics["peft_adapter_dir"] = str(final / "peft_adapter")
    plot_curves(metrics["history"], out / "curves.png", title=f"{cfg.model} {data.task} {cfg.method}({cfg.targets})")
    metrics["curves_png"] = str(final / "curves.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n", encoding="utf-8")


CONFIG = FinetuneConfig


def run(cfg: FinetuneConfig, progress: bool) -> dict:
    if not progress:
        cfg.quiet = True
    return finetune(cfg)


def report(m: dict, cfg: FinetuneConfig) -> str:
    if "adapter_dir" not in m:  # ranks other than 0 report nothing
        return ""
    ev = m["eval"]
    lines = [f"{m['task']}: {cfg.method}({cfg.targets}) on {cfg.model}, objective {cfg.objective}, "
             f"lambda={cfg.v_lr_ratio}, {m['train']['steps']} steps"]
    if "icl" in m:  # --objective lm: the answer-token loss, and the ICL scorer's accuracy before -> after
        lines.append(f"eval loss (answer tokens) = {ev['loss']:.4f}; ICL accuracy " + ", ".join(
            f"{k} shots {m['icl']['before'][k]['accuracy']:.3f} -> {m['icl']['after'][k]['accuracy']:.3f}"
            for k in m["icl"]["after"]) + f" (n = {next(iter(m['icl']['after'].values()))['n']})")
    else:
        lines.append(f"eval {ev['metric']} = {ev['score']:.4f} (accuracy {ev['accuracy']:.4f}, loss {ev['loss']:.4f})")
    lines += [
             f"trainable params {m['trainable_params']:,} of {m['total_params']:,}; adapter {m['artifact_bytes']:,} "
             f"bytes; step time median {m['train']['step_time_s_median']:.3f} s; peak RSS "
             f"{m['train']['peak_rss_mb']:.0f} MB",
             f"metrics: {cfg.out}/metrics.json  adapter: {m['adapter_dir']}  curves: {m['curves_png']}"]
    if "peft_adapter_dir" in m:
        lines.append(f"peft adapter: {m['peft_adapter_dir']}")
    return "\n".join(lines)


@dataclass
class MergeConfig:
    adapter: str | None = option(None, "the adapter/ directory of a finetune run", metavar="DIR", required=True)
    out: str | None = option(None, "output folder of the merged model (this or --out-gguf is required)",
                             metavar="DIR2")
    out_gguf: str | None = option(None, "also (or only) write the merged causal LM (--objective lm) as a GGUF file: "
                                        "a copy of the base model's source .gguf with only the merged matrices "
                                        "rewritten", metavar="FILE.gguf")
    gguf_type: str = option("keep", "type of the rewritten GGUF matrices: keep (the source's where the gguf package "
                                    "can encode it, else q8_0) | q8_0 | f16 | f32", choices=GGUF_TYPES)
    base_model: str | None = option(None, "override the base model path recorded in the adapter")
    dtype: str = option("auto", "auto (the base model's own: merging keeps it) | float32 | bfloat16 | float16")
    device: str | None = option(None, "cpu, cuda, cuda:1 ... where the merge is computed (default cpu)")
    overwrite: bool = overwrite_option()


def merge(cfg: MergeConfig) -> dict:
    """Fold the adapter in; write a dense folder (``out``) and/or a GGUF (``out_gguf``) of the merged model."""
    from ..finetune.artifacts import merge_output_folder, merged_adapter, read_meta, recorded_base_name, save_merged
    from ..gguf_source import sha256_of
    from ..gguf_write import check_gguf_target, gguf_file_of, save_gguf

    if not cfg.out and not cfg.out_gguf:
        raise LeantuneError("give --out DIR (a dense model), --out-gguf FILE.gguf, or both")
    folder = merge_output_folder(cfg.adapter, cfg.out, cfg.base_model, cfg.overwrite) if cfg.out else None
    source = None
    if cfg.out_gguf:  # refused before the base model loads
        meta = read_meta(cfg.adapter)
        if meta.get("head", "seq-cls") != "causal-lm":
            raise LeantuneError(f"{cfg.adapter} was trained with a classification head, which a GGUF language model "
                                "cannot hold; fine-tune with --objective lm to merge into a GGUF")
        if meta["targets"] == "all":
            raise LeantuneError("--out-gguf rewrites the adapted attention matrices; targets 'all' changed every "
                                "tensor: write a folder with --out and convert it with llama.cpp's convert_hf_to_gguf.py")
        source = gguf_file_of(cfg.base_model or recorded_base_name(meta))
        check_gguf_target(source, cfg.out_gguf, cfg.gguf_type)
    model, adapted, meta = merged_adapter(cfg.adapter, cfg.base_model, dtype=cfg.dtype, device=cfg.device)
    info = {}
    if cfg.out:
        info["out"] = str(save_merged(model, meta, folder, cfg.base_model))
    if cfg.out_gguf:
        matrices = sorted({(m.layer, m.name) for parts in adapted._parts.values() for m in parts})
        note = {"kind": "merge", "method": meta["method"], "targets": meta["targets"] if isinstance(meta["targets"], str)
                else ",".join(meta["targets"]), "rank": meta["rank"], "alpha": float(meta["alpha"]),
                "objective": meta.get("objective", "lm"), "task": meta.get("task", ""),
                "source_sha256": sha256_of(Path(source))}
        info["gguf"] = save_gguf(model, source, cfg.out_gguf, matrices, cfg.gguf_type, note)
    return info


def run_merge(cfg: MergeConfig, progress: bool) -> dict:
    return merge(cfg)


def report_merge(info: dict, cfg: MergeConfig) -> str:
    from .icl_apply import gguf_report

    lines = [f"merged model written to {info['out']}"] if "out" in info else []
    if "gguf" in info:
        lines.append(gguf_report(info["gguf"]))
    return "\n".join(lines)


COMMANDS = {
    ("finetune",): Recipe(
        FinetuneConfig, run, report,
        help="fine-tune only W_q/W_v (or other attention targets) with lr_V = lambda * lr_Q",
        description="Attention-selective fine-tuning (Yao et al., arXiv 2410.02247) for sequence classification: "
                    "train the chosen attention matrices (fused slices included) and the task head, with "
                    "per-matrix learning rates. Runs on the HF Trainer: use `accelerate launch -m leantune "
                    "finetune ...` or torchrun for data parallelism."),
    ("merge",): Recipe(
        MergeConfig, run_merge, report_merge, help="fold a leantune adapter into its base model; write a dense model",
        description="Load the base model named in ADAPTER/leantune_adapter.json, apply the adapter, merge it into "
                    "the weights and save_pretrained the result (safetensors)."),
}
