"""Evidence for the attention fine-tuning paper's claims (S1 a-d): sequence classification, resumable.

Configs (per method: LoRA r=8 and full-matrix updates), equal step budgets, eval curves every ``--eval-every``:
  qv_l1 qv_l2 qv_l4 qv_l8   W_q + W_v, lr_V = lambda * lr_Q
  qkv_l1 qk_l1 v_l1         the paper's controls (all three; Q+K without V; V alone)
  full_ft                   plain full fine-tuning (all parameters)
The base lr of each method is chosen ONCE at lambda = 1 (SST-2, seed 0, MiniLM) among ``--lr-*``, then fixed
for every lambda, task, seed and model (never tuned per lambda). Every run is a separate process
(``python -m leantune finetune``), so its peak RSS is its own; one JSON line per finished run goes to
``benchmarks/results/evidence_finetune.jsonl`` and finished runs are never redone. ``--summary-only``
rebuilds the tables and curve plots from that file.

    nice -n 10 .venv/bin/python benchmarks/evidence_finetune.py                # everything, priority order
    .venv/bin/python benchmarks/evidence_finetune.py --summary-only

The fair lambda protocol (claim S1c) comes first: with the base lr fixed at its lambda = 1 optimum, a larger
lr_V can only overshoot, which is unfair to the paper. So for every lambda in {1, 2, 4, 8}, LoRA QV chooses its
own lr_Q from ``FAIR_LRS`` (5 values spanning 16x) on MiniLM SST-2 at seed 0, then runs its best lr_Q at seeds
0, 1, 2; convergence is compared at each lambda's own best. Then full-matrix QV at lambda 1 vs the best lambda
(the same lr choice per lambda). The earlier protocol (one lr for every lambda) stays in its own table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, append_jsonl, machine, read_jsonl, replace_block

ROOT = Path(__file__).resolve().parents[1]
JOURNAL = RESULTS / "evidence_finetune.jsonl"
DOCS = ROOT / "docs" / "evidence"
WORK = ROOT / "runs" / "evidence" / "finetune"

# config -> (targets, lambda); the method (lora | full) is the other half of a run's name
SELECTIVE = {"qv_l1": ("qv", 1.0), "qv_l2": ("qv", 2.0), "qv_l4": ("qv", 4.0), "qv_l8": ("qv", 8.0),
             "qkv_l1": ("qkv", 1.0), "qk_l1": ("qk", 1.0), "v_l1": ("v", 1.0)}
LAMBDAS = ("qv_l1", "qv_l2", "qv_l4", "qv_l8")
PAPER = {  # RoBERTa-base, r = 8, the paper's GLUE table (accuracy %, MRPC: its reported metric)
    "lora/qkv_l1": {"rte": 70.76, "mrpc": 85.04, "sst2": 93.92},
    "lora/qv_l4": {"rte": 75.09, "mrpc": 87.01, "sst2": 94.04},
}
FAIR_LRS = (1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3)  # lr_Q grid of the fair protocol (16x span)
# per (model, task): steps, batch size, max length, eval every
BUDGET = {("minilm", "sst2"): (600, 16, 64, 50), ("minilm", "rte"): (600, 16, 128, 50),
          ("minilm", "mrpc"): (600, 16, 128, 50), ("smollm2-135m", "sst2"): (300, 8, 64, 50),
          ("smollm2-135m", "rte"): (300, 8, 128, 50)}


def all_configs() -> list[str]:
    return [f"{m}/{c}" for m in ("lora", "full") for c in SELECTIVE] + ["full_ft"]


def run_key(model, task, config, lr, seed) -> str:
    steps, bs, length, every = BUDGET[(model, task)]
    return f"{model}/{task}/{config}/lr{lr:g}/s{seed}/steps{steps}-bs{bs}-len{length}"


def read_rows() -> list[dict]:
    return read_jsonl(JOURNAL)


def append_row(rec: dict) -> None:
    append_jsonl(JOURNAL, rec)


def run(model, task, config, lr, seed, threads) -> dict:
    steps, bs, length, every = BUDGET[(model, task)]
    method, _, name = config.partition("/")
    targets, lam = ("all", 1.0) if config == "full_ft" else SELECTIVE[name]
    method = "full" if config == "full_ft" else method
    key = run_key(model, task, config, lr, seed)
    out = WORK / key.replace("/", "_")
    shutil.rmtree(out, ignore_errors=True)  # a run killed half-way restarts from scratch (our own folder)
    cmd = [sys.executable, "-m", "leantune", "finetune", "--model", model, "--task", task, "--targets", targets,
           "--method", method, "--rank", "8", "--alpha", "16", "--dropout", "0.05", "--lr", f"{lr:g}",
           "--v-lr-ratio", f"{lam:g}", "--max-steps", str(steps), "--batch-size", str(bs), "--max-length", str(length),
           "--eval-every", str(every), "--seed", str(seed), "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{key} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    ev = m["eval"]
    rec = {"run": key, "model": model, "task": task, "config": config, "method": method, "targets": targets,
           "lambda": lam, "lr": lr, "seed": seed, "steps": m["train"]["steps"], "batch_size": bs, "max_length": length,
           "metric": ev["metric"], "score": ev["score"], "accuracy": ev.get("accuracy"), "f1": ev.get("f1"),
           "curve": [{"step": h["step"], "score": h.get("score"), "accuracy": h.get("accuracy")}
                     for h in m["history"]["eval"]],
           "trainable_params": m["trainable_params"], "artifact_bytes": m["artifact_bytes"],
           "peak_rss_mb": m["train"]["peak_rss_mb"], "step_time_s_median": m["train"]["step_time_s_median"],
           "train_runtime_s": m["train"]["runtime_s"], "wall_s": round(time.perf_counter() - t0, 1),
           "optimizer_groups": m["optimizer_groups"], "data": m["data"], "model_source": m.get("model_source"),
           "threads": threads, "machine": machine()}
    shutil.rmtree(out, ignore_errors=True)  # keep the numbers; a full-FT "adapter" is the whole model
    return rec


def chosen_lrs(rows, lr_grid) -> dict:
    """Per method: the lambda = 1 config's best lr on MiniLM SST-2 seed 0 (ties: the smaller lr)."""
    chosen = {}
    for method, config in (("lora", "lora/qv_l1"), ("full", "full/qv_l1"), ("full_ft", "full_ft")):
        scores = {r["lr"]: r["score"] for r in rows if r["model"] == "minilm" and r["task"] == "sst2"
                  and r["config"] == config and r["seed"] == 0 and r["lr"] in lr_grid[method]}
        if len(scores) == len(lr_grid[method]):
            chosen[method] = max(scores, key=lambda lr: (scores[lr], -lr))
    return chosen


FULL_FAIR_LRS = (1.25e-4, 2.5e-4, 5e-4, 1e-3)  # full-matrix QV: its own lr_Q grid per lambda


def fair_best(rows, method: str = "lora") -> dict:
    """lambda config -> its own best lr_Q on MiniLM SST-2 seed 0, once its whole lr row is done."""
    grid = FAIR_LRS if method == "lora" else FULL_FAIR_LRS
    best = {}
    for cfg in LAMBDAS:
        scores = {r["lr"]: r["score"] for r in rows if r["model"] == "minilm" and r["task"] == "sst2"
                  and r["config"] == f"{method}/{cfg}" and r["seed"] == 0 and r["lr"] in grid}
        if len(scores) == len(grid):
            best[cfg] = max(scores, key=lambda lr: (scores[lr], -lr))
    return best


def fair_plan(seeds, rows) -> list[tuple]:
    """The fair lambda protocol's runs, most informative first: the large lambdas at the small lrs (where a
    larger lr_V can help instead of overshoot), then the rest of each lambda's lr row; each lambda's best lr_Q
    at the other seeds as soon as its row is complete; then full-matrix QV at lambda 1 and at the best LoRA
    lambda, each with its own lr row, then its best at the other seeds."""
    order = [(c, lr) for lr in sorted(FAIR_LRS) for c in ("qv_l8", "qv_l4")] + \
        [(c, lr) for c in ("qv_l2", "qv_l1") for lr in sorted(FAIR_LRS)]
    out = [("minilm", "sst2", f"lora/{c}", lr, 0) for c, lr in order]
    best = fair_best(rows)
    out += [("minilm", "sst2", f"lora/{c}", best[c], s) for c in LAMBDAS if c in best for s in seeds if s != 0]
    if len(best) == len(LAMBDAS):
        def mean_score(c):
            return statistics.mean([r["score"] for r in rows if r["config"] == f"lora/{c}" and r["lr"] == best[c]
                                    and r["model"] == "minilm" and r["task"] == "sst2"])
        top = max(LAMBDAS, key=mean_score)
        full_best = fair_best(rows, "full")
        for c in dict.fromkeys(("qv_l1", top)):
            out += [("minilm", "sst2", f"full/{c}", lr, 0) for lr in FULL_FAIR_LRS]
            if c in full_best:
                out += [("minilm", "sst2", f"full/{c}", full_best[c], s) for s in seeds if s != 0]
    return out


def fair_summary(rows) -> str:
    """Claim S1c under the fair protocol: each lambda at its own best lr_Q."""
    seed0 = {(r["config"], r["lr"]): r["score"] for r in rows if r["model"] == "minilm" and r["task"] == "sst2"
             and r["seed"] == 0 and r["config"] in {f"lora/{c}" for c in LAMBDAS}}
    if not any(lr in FAIR_LRS for _, lr in seed0):
        return ""
    out = ["\n#### Fair lambda protocol: LoRA QV on MiniLM SST-2, each lambda with its own lr_Q (seed 0 grid, %)\n",
           "| lambda | " + " | ".join(f"lr_Q {lr:g}" for lr in FAIR_LRS) + " | best lr_Q |",
           "|---|" + "---|" * (len(FAIR_LRS) + 1)]
    best = fair_best(rows)
    for c in LAMBDAS:
        cells = [f"{100 * seed0[(f'lora/{c}', lr)]:.2f}" if (f"lora/{c}", lr) in seed0 else "-" for lr in FAIR_LRS]
        out.append(f"| {SELECTIVE[c][1]:g} | " + " | ".join(cells) + f" | {best.get(c, 'grid incomplete')} |")
    if best:
        out += ["", "Each lambda at its own best lr_Q, all seeds run so far (final dev accuracy %, steps to 95 % of "
                    "the best final score of the table, curve AUC = mean of the eval curve):", "",
                "| lambda | lr_Q | seeds | final | steps to 95% | curve AUC |", "|---|---|---|---|---|---|"]
        runs = {c: [r for r in rows if r["config"] == f"lora/{c}" and r["lr"] == best[c] and r["model"] == "minilm"
                    and r["task"] == "sst2"] for c in best}
        top = max((r["score"] for rs in runs.values() for r in rs), default=0)
        for c, rs in runs.items():
            reach = [next((p["step"] for p in r["curve"] if p["score"] >= 0.95 * top), None) for r in rs]
            out.append(f"| {SELECTIVE[c][1]:g} | {best[c]:g} | {len(rs)} | {_ms([100 * r['score'] for r in rs])} | "
                       f"{_ms([x for x in reach if x is not None], 0)}{'' if all(reach) else ' (some never)'} | "
                       f"{_ms([100 * statistics.mean(p['score'] for p in r['curve']) for r in rs])} |")
    return "\n".join(out)


def method_of(config: str) -> str:
    return "full_ft" if config == "full_ft" else config.split("/")[0]


def plan(models, tasks, seeds, lr_grid, rows, fair: bool = True) -> list[tuple]:
    """Runs still to do, most informative per CPU-minute first (a session may end at any point):
    the lr selections of LoRA and full-matrix QV (they fix those grids' lrs); MiniLM with LoRA (the paper's
    Table 2 setting) on the first task at every seed, so its table has a spread; LoRA on the other tasks;
    then full-matrix updates, the full fine-tuning control (its lr selection first); SmolLM2 last.
    Within a (task, seed), the controls of claims (a)/(b) (QV, QKV, QK, V at lambda 1) come before the
    other lambdas. Why the first task at every seed before the other tasks: on RTE, MiniLM stayed at the
    majority-class rate (0.531 at lambda 1 after 600 steps, 20 CPU-minutes), which says nothing about
    the claims. A method's grid waits for its lr."""
    selection = {m: [("minilm", "sst2", cfg, lr, 0) for lr in lr_grid[m]]
                 for m, cfg in (("lora", "lora/qv_l1"), ("full", "full/qv_l1"), ("full_ft", "full_ft"))}
    lrs = chosen_lrs(rows, lr_grid)
    order = ["qv_l1", "qkv_l1", "qk_l1", "v_l1", "qv_l2", "qv_l4", "qv_l8"]
    assert sorted(order) == sorted(SELECTIVE)

    def grid(model, task_list, seed, methods):
        out = []
        for task in task_list:
            if (model, task) not in BUDGET:
                continue
            configs = [f"{m}/{c}" for m in ("lora", "full") for c in order] + ["full_ft"] if model == "minilm" \
                else ["lora/qv_l1", "lora/qkv_l1", "lora/qk_l1", "lora/v_l1", "lora/qv_l4"]  # 135M: LoRA only
            out += [(model, task, c, lrs[method_of(c)], seed) for c in configs
                    if method_of(c) in methods and method_of(c) in lrs]
        return out

    todo = fair_plan(seeds, rows) if fair and "minilm" in models and "sst2" in tasks else []
    todo += selection["lora"] + selection["full"]
    if "minilm" in models:
        first, rest = tasks[:1], tasks[1:]
        for seed in seeds:
            todo += grid("minilm", first, seed, ("lora",))
        for seed in seeds:
            todo += grid("minilm", rest, seed, ("lora",))
        for seed in seeds:
            todo += grid("minilm", tasks, seed, ("full",))
        todo += selection["full_ft"]
        for seed in seeds:
            todo += grid("minilm", tasks, seed, ("full_ft",))
    for model in (m for m in models if m != "minilm"):
        for seed in seeds:
            todo += grid(model, tasks, seed, ("lora",))
    done = {r["run"] for r in rows}
    seen, out = set(), []
    for u in todo:
        k = run_key(*u)
        if k not in done and k not in seen:
            seen.add(k)
            out.append(u)
    return out


def summarize(rows, lr_grid) -> str:
    lrs = chosen_lrs(rows, lr_grid)
    lines = [f"<!-- generated by benchmarks/evidence_finetune.py --summary-only from {len(rows)} runs -->",
             f"\nBase learning rates chosen once at lambda = 1 (MiniLM, SST-2, seed 0): {lrs or 'not yet'}"]
    if not lrs:
        return "\n".join(lines) + "\n"
    lines.append(fair_summary(rows))
    lines.append("\n#### The earlier protocol: one base lr for every lambda (chosen at lambda = 1)")
    grid = [r for r in rows if r["lr"] == lrs.get(method_of(r["config"]))]  # a method without its lr yet: none
    for (model, task) in BUDGET:
        mine = [r for r in grid if r["model"] == model and r["task"] == task]
        if not mine:
            continue
        steps, bs, length, every = BUDGET[(model, task)]
        lines += [f"\n#### {model} / {task} ({steps} steps, batch {bs}, length {length}; final dev "
                  f"{mine[0]['metric']}, mean ± std over seeds, %)\n",
                  "| config | seeds | final score | best-during-run | steps to 95% of best | curve AUC | trainable | "
                  "artifact KB | peak RSS MB | step ms | paper (RoBERTa-base) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        best_final = max(r["score"] for r in mine)
        for config in all_configs():
            rs = [r for r in mine if r["config"] == config]
            if not rs:
                continue
            finals = [100 * r["score"] for r in rs]
            bests = [100 * max(p["score"] for p in r["curve"]) for r in rs]
            reach = [next((p["step"] for p in r["curve"] if p["score"] >= 0.95 * best_final), None) for r in rs]
            aucs = [100 * statistics.mean(p["score"] for p in r["curve"]) for r in rs]
            paper = PAPER.get(config, {}).get(task) if model == "minilm" else None
            lines.append(f"| {config} | {len(rs)} | {_ms(finals)} | {_ms(bests)} | "
                         f"{_ms([x for x in reach if x is not None], 0)}{'' if all(reach) else ' (some never)'} | "
                         f"{_ms(aucs)} | {rs[0]['trainable_params']:,} | {rs[0]['artifact_bytes'] / 1e3:.0f} | "
                         f"{statistics.median(r['peak_rss_mb'] for r in rs):.0f} | "
                         f"{1e3 * statistics.median(r['step_time_s_median'] for r in rs):.0f} | "
                         f"{paper if paper is not None else '-'} |")
        _curves(mine, model, task, DOCS / f"ft_curves_{model}_{task}.png")
        lines.append(f"\n![{model} {task} eval curves](evidence/ft_curves_{model}_{task}.png)")
    return "\n".join(lines) + "\n"


def _ms(xs, digits=2) -> str:
    if not xs:
        return "-"
    m = statistics.mean(xs)
    return f"{m:.{digits}f} ± {statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else f"{m:.{digits}f}"


def _curves(rows, model, task, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    DOCS.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, method in zip(axes, ("lora", "full")):
        for config in [f"{method}/{c}" for c in SELECTIVE] + ["full_ft"]:
            rs = [r for r in rows if r["config"] == config]
            if not rs:
                continue
            steps = [p["step"] for p in rs[0]["curve"]]
            mean = [statistics.mean(r["curve"][i]["score"] for r in rs if i < len(r["curve"])) for i in range(len(steps))]
            ax.plot(steps, mean, marker=".", label=config.split("/")[-1], linestyle="--" if config == "full_ft" else "-")
        ax.set_title(f"{model} {task}: {method} (mean over seeds)")
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("dev score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="minilm,smollm2-135m")
    p.add_argument("--tasks", default="sst2,rte,mrpc")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lr-lora", default="5e-4,2e-3")
    p.add_argument("--lr-full", default="1e-4,5e-4")
    p.add_argument("--lr-full-ft", default="5e-5,2e-4")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-runs", type=int, default=None)
    p.add_argument("--summary-only", action="store_true")
    a = p.parse_args()
    lr_grid = {"lora": [float(x) for x in a.lr_lora.split(",")], "full": [float(x) for x in a.lr_full.split(",")],
               "full_ft": [float(x) for x in a.lr_full_ft.split(",")]}
    if not a.summary_only:
        n = 0
        while a.max_runs is None or n < a.max_runs:
            todo = plan(a.models.split(","), a.tasks.split(","), [int(s) for s in a.seeds.split(",")], lr_grid,
                        read_rows())
            if not todo:
                break
            u = todo[0]
            rec = run(*u, threads=a.threads)
            append_row(rec)
            n += 1
            print(f"[{n}, {len(todo) - 1} left] {rec['run']}: {rec['metric']} {rec['score']:.4f} "
                  f"({rec['wall_s']:.0f}s)", flush=True)
    md = summarize(read_rows(), lr_grid)
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "finetune_tables.md").write_text(md)
    replace_block(ROOT / "docs" / "evidence.md", "finetune_tables", md)  # the page quotes the current tables
    print(f"summary: {DOCS / 'finetune_tables.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
