"""Exploration sweep for the lab model: which (architecture, size, lr, data mix) learns ICL, and how fast.

Runs every configuration in its own process (all at once; meant for a GPU box, where each tiny model
leaves the device mostly idle) and logs ICL accuracy (4 shots per class, 8 held-out instances) every
``--monitor`` steps to ``OUT/<name>.log`` and ``OUT/sweep.json``. The committed checkpoint is always
trained on CPU by ``leantune lab train``; this script only picks the recipe. Usage:

    python benchmarks/lab_sweep.py --out runs/lab_sweep --device cuda --steps 100000 --max-seconds 390

Both rounds recorded in ``benchmarks/results/lab_sweep/`` ran on one H200 (14 and 7 processes at once,
each data-generation bound at ~18 steps/s); docs/lab.md summarizes them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import asdict
from pathlib import Path

BASE = dict(layers=2, hidden=64, heads=4, intermediate=256, batch_size=64, lr=3e-3, warmup=200,
            max_items=48, min_items=16, copy_fraction=0.5, schedule="constant", threads=1)
CONFIGS = {
    "L2x64_lr3e-3": dict(arch="llama"),
    "L2x64_lr1e-3": dict(arch="llama", lr=1e-3),
    "G2x64_lr3e-3": dict(arch="gpt2"),
    "G2x64_lr1e-3": dict(arch="gpt2", lr=1e-3),
    "G2x128_lr1e-3": dict(arch="gpt2", hidden=128, intermediate=512, lr=1e-3),
    "L2x128h8_lr1e-3": dict(arch="llama", hidden=128, heads=8, intermediate=512, lr=1e-3),
    "L4x128_lr1e-3": dict(arch="llama", layers=4, hidden=128, intermediate=512, lr=1e-3),
    "G4x128_lr1e-3": dict(arch="gpt2", layers=4, hidden=128, intermediate=512, lr=1e-3),
    "L2x64_copy": dict(arch="llama", copy_fraction=1.0),
    "G2x64_copy": dict(arch="gpt2", copy_fraction=1.0),
    "L2x64_init0.1": dict(arch="llama", init_std=0.1),
    "G2x64_bs128_wd0": dict(arch="gpt2", lr=1e-3, batch_size=128, weight_decay=0.0),
    "G2x64_items64": dict(arch="gpt2", min_items=32, max_items=64),
    "G3x96_lr2e-3": dict(arch="gpt2", layers=3, hidden=96, intermediate=384, lr=2e-3),
    # second round, around the first configuration that left the plateau (G3x96_lr2e-3, ~5.5k steps)
    "G3x96_lr2e-3_seed1": dict(arch="gpt2", layers=3, hidden=96, intermediate=384, lr=2e-3, seed=1),
    "G3x96_lr3e-3": dict(arch="gpt2", layers=3, hidden=96, intermediate=384, lr=3e-3),
    "G3x96_lr2e-3_bs32": dict(arch="gpt2", layers=3, hidden=96, intermediate=384, lr=2e-3, batch_size=32),
    "G3x96_lr2e-3_items8-24": dict(arch="gpt2", layers=3, hidden=96, intermediate=384, lr=2e-3, min_items=8,
                                   max_items=24),
    "G3x64_lr2e-3": dict(arch="gpt2", layers=3, hidden=64, intermediate=256, lr=2e-3),
    "G3x96_lr2e-3_copy0.8": dict(arch="gpt2", layers=3, hidden=96, intermediate=384, lr=2e-3, copy_fraction=0.8),
    "G3x96h6_lr2e-3": dict(arch="gpt2", layers=3, hidden=96, heads=6, intermediate=384, lr=2e-3),
}


def run_one(name: str, overrides: dict, args) -> None:
    import contextlib

    from leantune.lab.train import LabTrainConfig, train

    cfg = LabTrainConfig(**{**BASE, **overrides, "steps": args.steps, "device": args.device})
    log = open(Path(args.out) / f"{name}.log", "w", buffering=1)
    with contextlib.redirect_stdout(log):
        print(json.dumps(asdict(cfg)))
        report = train(cfg, f"/tmp/lab_sweep/{name}", progress=False, eval_instances=args.eval_instances,
                       monitor=args.monitor)
        print("FINAL", json.dumps({"shots": report["shots"], "train_seconds": report["train_seconds"]}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/lab_sweep")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--monitor", type=int, default=1000)
    ap.add_argument("--eval-instances", type=int, default=16)
    ap.add_argument("--only", nargs="*", help="config names to run (default: all)")
    ap.add_argument("--max-seconds", type=float, default=1e9, help="stop every run after this long")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    names = args.only or list(CONFIGS)
    ctx = mp.get_context("spawn")
    t0 = time.time()
    procs = [ctx.Process(target=run_one, args=(n, CONFIGS[n], args)) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(max(1.0, args.max_seconds - (time.time() - t0)))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join()
    summary = {}
    for n in names:
        lines = (Path(args.out) / f"{n}.log").read_text().splitlines()
        curve = [ln for ln in lines if ln.startswith("step ")]
        final = [json.loads(ln[6:]) for ln in lines if ln.startswith("FINAL ")]
        summary[n] = {"overrides": CONFIGS[n], "curve": curve, "final": final[0] if final else None}
        print(n, curve[-1] if curve else "-", final[0]["shots"][-1]["accuracy"] if final else "")
    Path(args.out, "sweep.json").write_text(json.dumps({"base": BASE, "steps": args.steps, "device": args.device,
                                                        "seconds": time.time() - t0, "runs": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
