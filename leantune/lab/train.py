"""`leantune lab train`: train the lab model (a small GPT-2) on the synthetic ICL family, deterministically.

Loss is taken on label tokens only (the predictions the family is about). The checkpoint (HF format,
safetensors), its tokenizer, the training config and the shots report go to ``out``; the committed
copy lives in ``leantune/lab/checkpoint`` and loads by the alias ``lab-icl``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import LeantuneError
from ..runinfo import versions, write_json
from .synthetic import training_sequence
from .tokenizer import build_tokenizer

CHECKPOINT = Path(__file__).parent / "checkpoint"


@dataclass
class LabTrainConfig:
    """The recipe of the committed checkpoint (chosen by benchmarks/lab_sweep.py, see docs/lab.md).

    Two-layer models and 1e-3 learning rates stayed on the "which two labels" plateau for 7k+ steps;
    a 3-layer GPT-2 at 2e-3 left it after ~5.5k steps, sooner with shorter sequences (8-24 items).
    """

    seed: int = 0
    arch: str = "gpt2"  # "gpt2" (learned absolute positions) or "llama" (rotary positions)
    layers: int = 3
    hidden: int = 96
    heads: int = 4
    intermediate: int = 384
    steps: int = 14000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 200
    schedule: str = "wsd"  # "wsd": warmup, flat, cosine decay over the last decay_fraction; or "cosine", "constant"
    decay_fraction: float = 0.2
    weight_decay: float = 0.05
    max_items: int = 24  # "x label" items per training sequence (min_items..max_items)
    min_items: int | None = 8  # None: max_items // 4 (at least 4)
    copy_fraction: float = 0.5  # sequences built from a few repeated words (see training_sequence)
    init_std: float | None = None  # None: the architecture's default initializer_range
    threads: int = 2  # fixed so that the run is reproducible on a given machine
    device: str = "cpu"  # the committed checkpoint is trained on CPU; a GPU only serves exploration


def model_config(cfg: LabTrainConfig, vocab_size: int):
    init = {} if cfg.init_std is None else {"initializer_range": cfg.init_std}
    if cfg.arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab_size, n_embd=cfg.hidden, n_layer=cfg.layers, n_head=cfg.heads,
                          n_inner=cfg.intermediate, n_positions=256, tie_word_embeddings=True, resid_pdrop=0.0,
                          embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1, pad_token_id=0, **init)
    if cfg.arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                           num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                           intermediate_size=cfg.intermediate, max_position_embeddings=256,
                           tie_word_embeddings=True, bos_token_id=1, eos_token_id=1, pad_token_id=0,
                           rms_norm_eps=1e-5, **init)
    raise ValueError(f"unknown lab architecture {cfg.arch!r}: use 'llama' or 'gpt2'")


def lr_factor(cfg: LabTrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup)
    if cfg.schedule == "constant":
        return warm
    if cfg.schedule == "wsd":  # the flat phase is where ICL emerges; the short decay settles the weights
        start = cfg.steps * (1 - cfg.decay_fraction)
        frac = max(0.0, (step - start) / max(1.0, cfg.steps - start))
        return warm * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    if cfg.schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
    raise ValueError(f"unknown lab schedule {cfg.schedule!r}: use 'wsd', 'cosine' or 'constant'")


def _batch(tok, rng: random.Random, cfg: LabTrainConfig):
    seqs = [training_sequence(rng, cfg.max_items, cfg.min_items, cfg.copy_fraction) for _ in range(cfg.batch_size)]
    width = max(len(w) for w, _ in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (words, targets) in enumerate(seqs):
        row = tok.convert_tokens_to_ids(words)
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
        for t in targets:
            labels[i, t] = row[t]  # HF shifts: position t-1 predicts token t
    return ids, mask, labels


def quick_icl(model, tok, instances: int = 8, shots: int = 4) -> float:
    from .report import instance_metrics

    accs = [m["accuracy"] for m in instance_metrics(model, tok, shots, instances)]
    return sum(accs) / len(accs)


def _refuse_package_dir(out: Path) -> None:
    """Training never writes inside the installed library (the packaged lab-icl checkpoint lives there)."""
    package = Path(__file__).resolve().parents[1]
    target = out.resolve()
    if target == package or package in target.parents:
        raise LeantuneError(f"--out {out} is inside the installed leantune package; choose a folder of your own "
                            f"(e.g. runs/lab)")


def train(cfg: LabTrainConfig, out: str | Path, progress: bool = True, eval_instances: int = 48,
          monitor: int = 0, overwrite: bool = False) -> dict:
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    from ..outputs import OutputFolder

    _refuse_package_dir(Path(out))
    folder = OutputFolder(out, "lab train", overwrite=overwrite)  # checked now, written after training
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tok = build_tokenizer()
    model = AutoModelForCausalLM.from_config(model_config(cfg, len(tok)), attn_implementation="sdpa").to(cfg.device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s))
    history = []
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(range(cfg.steps), desc="lab train", disable=not progress)
    ema = None
    for step in bar:
        ids, mask, labels = _batch(tok, rng, cfg)
        loss = model(input_ids=ids.to(cfg.device), attention_mask=mask.to(cfg.device),
                     labels=labels.to(cfg.device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        ema = value if ema is None else 0.98 * ema + 0.02 * value
        if step % 100 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": value, "loss_ema": ema})
            bar.set_postfix(loss=f"{ema:.3f}")
        if monitor and (step + 1) % monitor == 0:
            model.eval()
            icl = quick_icl(model, tok)
            model.train()
            history.append({"step": step + 1, "loss_ema": ema, "icl_4shot_8inst": icl,
                            "seconds": time.perf_counter() - t0})
            if not progress:
                print(f"step {step + 1}: loss_ema {ema:.3f} icl(4-shot, 8 instances) {icl:.3f}", flush=True)
    model.eval()
    seconds = time.perf_counter() - t0
    from .report import shots_table

    with folder as stage:  # the checkpoint and its report appear together, or not at all
        model.to("cpu").save_pretrained(stage)
        tok.save_pretrained(stage)
        table = shots_table(str(stage), instances=eval_instances, progress=progress)
        report = {"config": asdict(cfg), "train_seconds": seconds, "history": history, "shots": table,
                  "eval_instances": eval_instances, "versions": versions()}
        write_json(stage / "lab_train.json", report)
    return report
