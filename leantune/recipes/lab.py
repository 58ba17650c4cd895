"""Recipes of ``leantune lab train`` and ``leantune lab study`` (the theory lab's model and its SVD study)."""

from __future__ import annotations

from dataclasses import dataclass

from ..lab.train import LabTrainConfig
from .common import Recipe, overwrite_option
from ..options import option


@dataclass
class LabTrainCommand:
    seed: int = option(0, "seed of the synthetic data and the model's init")
    steps: int = option(LabTrainConfig.steps, "optimizer steps")
    monitor: int = option(0, "every N steps, log 4-shot ICL accuracy on 8 held-out instances (costs a few "
                             "seconds)", metavar="N")
    eval_instances: int = option(48, "held-out task instances in the shots table")
    device: str = option(LabTrainConfig.device, "cpu (default: the committed checkpoint is trained on CPU) | cuda | "
                                                "cuda:N")
    # Never the packaged checkpoint: a training run must not overwrite the installed library's files.
    out: str = option("runs/lab", "checkpoint folder (default: runs/lab under the current directory; the packaged "
                                  "lab-icl checkpoint is never written)")
    overwrite: bool = overwrite_option()


def run_train(cfg: LabTrainCommand, progress: bool) -> dict:
    from ..lab.train import train

    return train(LabTrainConfig(seed=cfg.seed, steps=cfg.steps, device=cfg.device), cfg.out, progress=progress,
                 eval_instances=cfg.eval_instances, monitor=cfg.monitor, overwrite=cfg.overwrite)


def report_train(r: dict, cfg: LabTrainCommand) -> str:
    lines = [f"trained in {r['train_seconds']:.0f}s; ICL accuracy on held-out assignments (test split, "
             f"{r['eval_instances']} instances):"]
    lines += [f"  {row['shots_per_class']} shot(s) per class: {row['accuracy']:.3f} "
              f"(± {row['std_over_instances']:.3f})" for row in r["shots"]]
    lines.append(f"checkpoint: {cfg.out}")
    return "\n".join(lines)


@dataclass
class LabStudyCommand:
    model: str = option("lab-icl", "the causal LM to study (an alias, hub id or folder)")
    shots: str = option("1,4", "two (or more) shot counts per class")
    seeds: int = option(3, "demonstration draws")
    instances: int = option(8, "held-out task instances pooled per seed")
    out: str = option("docs/lab", "folder of the figures and tables")


def run_study(cfg: LabStudyCommand, progress: bool) -> dict:
    from ..lab.study import study

    return study(cfg.model, shots=tuple(int(s) for s in cfg.shots.split(",")), seeds=tuple(range(cfg.seeds)),
                 instances=cfg.instances, out=cfg.out, progress=progress)


def report_study(r: dict, cfg: LabStudyCommand) -> str:
    return f"results: {cfg.out}/lab_study.json; plot: {r['plots'][0]}"


COMMANDS = {
    ("lab", "train"): Recipe(LabTrainCommand, run_train, report_train,
                             help="train the lab model (deterministic; ~26 min on 2 CPU cores)"),
    ("lab", "study"): Recipe(LabStudyCommand, run_study, report_study,
                             help="accuracy vs SVD clipping rate per layer/module, two shot counts"),
}
