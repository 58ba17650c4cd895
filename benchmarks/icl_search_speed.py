"""SVD search speed: `leantune icl search` vs a faithful re-implementation of the seed paper's loop.

Setup (both sides): ``--model smollm2-135m`` (headline, real pretrained weights; 100 validation examples)
or ``gpt2-random`` (GPT-2-small-shaped random model with the real GPT-2 tokenizer; 200 validation
examples); SST-2 from ../shared/data, 10-shot (5 per class), validation carved from train;
64 candidates = {mlp, attn} x last 4 layers x the paper's 8 rates.

* leantune: `icl_search(strategy="grid")` on all 64 candidates (timed: the search itself).
* seed loop (BASELINE, benchmarks/seed_baseline.py): per candidate, `svd_lowrank(niter=2)` of every
  matrix of the module, then batch-1 full-forward scoring of every example with full-vocabulary
  log-softmax at every position. Its cost per candidate does not depend on layer or rate, so it runs on
  a subset (both modules, 2 layers, rates 0 / 0.9 / 0.995 ...) and its mean time per candidate is
  extrapolated to 64 (reported as such). For the prediction comparison the subset is scored with the
  exact SVD (`torch.linalg.svd`); the timed cost per candidate is the randomized SVD's time plus that
  scoring time, since scoring cost does not depend on which SVD produced the weights. The seed code's
  in-place compounding of edits is *not* reproduced: each candidate starts from the original weights.

    .venv/bin/python benchmarks/icl_search_speed.py --model smollm2-135m --n-val 100 --subset 2
    .venv/bin/python benchmarks/icl_search_speed.py [--subset 8] [--n-val 200]        # random GPT-2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import bench_model, gpt2_small_random, machine, result_name, save
from seed_baseline import seed_low_rank, seed_predict

from leantune.arch import get_arch
from leantune.icl.evaluator import build_prefix
from leantune.icl.splits import make_icl_data
from leantune.models import gpt2_tokenizer_offline
from leantune.svd.edits import module_matrices
from leantune.recipes.icl_search import PAPER_RATES, icl_search
from leantune.tasks import get_task

# (layer counted from the end, module, rate): the first two already cover both modules
SUBSET = [(-4, "mlp", 0.0), (-4, "attn", 0.995), (-1, "mlp", 0.995), (-1, "attn", 0.0), (-4, "mlp", 0.9),
          (-1, "attn", 0.5), (-3, "mlp", 0.99), (-2, "attn", 0.75)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subset", type=int, default=8, help="seed-loop candidates actually run (>= 2: both modules)")
    ap.add_argument("--model", default="gpt2-random", help="gpt2-random or a leantune model name (smollm2-135m)")
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--leantune-only", action="store_true",
                    help="rerun only the leantune search (e.g. on a quieter machine) and add it to the saved "
                         "results as leantune_rerun, next to the saved seed-loop timings")
    ap.add_argument("--seed-check", action="store_true",
                    help="rerun one seed-loop candidate (rate 0, scoring only) alone and add it to the saved "
                         "results as seed_loop_quiet_check")
    args = ap.parse_args()
    if args.seed_check:
        return seed_check(args)
    task = get_task("sst2")
    model, tok, model_dir, what = bench_model(args.model)
    arch = get_arch(model)
    out = {"machine": machine(), "setup": {"model": what, "task": "sst2",
                                           "shots_per_class": 5, "n_val": args.n_val, "candidates": 64,
                                           "layers": list(range(arch.num_layers - 4, arch.num_layers)),
                                           "modules": ["mlp", "attn"],
                                           "rates": list(PAPER_RATES)}}
    with tempfile.TemporaryDirectory() as d:
        if model_dir is None:
            model_dir = Path(d) / "m"
            model.save_pretrained(model_dir)
            tok.save_pretrained(model_dir)
        t0 = time.perf_counter()
        s = icl_search(str(model_dir), "sst2", strategy="grid", modules="mlp,attn", layers="last4",
                       rates=list(PAPER_RATES), shots=5, n_val=args.n_val, n_test=20, seed=args.seed,
                       batch_size=16, out=str(Path(d) / "search"), progress=False)
        wall = time.perf_counter() - t0
        journal = {json.loads(x)["key"]: json.loads(x)
                   for x in (Path(d) / "search" / "candidates.jsonl").read_text().splitlines()}
    out["leantune"] = {"search_seconds": s["seconds"]["search_this_run"], "wall_seconds_incl_load_and_test": wall,
                       "evaluations": s["candidates"]["evaluated_this_run"],
                       "tokens_processed": s["tokens_processed"]["search_this_run"],
                       "note": "the 8 rate-0 candidates are the unedited model: scored once (the baseline)"}
    print("leantune", out["leantune"], flush=True)
    if args.leantune_only:
        from common import RESULTS

        saved = json.loads((RESULTS / f"{result_name('icl_search_speed', args.model)}.json").read_text())
        saved["leantune_rerun"] = {**out["leantune"], "machine": out["machine"]}
        base = saved["seed_loop"]
        saved["leantune_rerun"]["speedup_total_time"] = base["extrapolated_seconds_for_64"] / \
            out["leantune"]["search_seconds"]
        saved["leantune_rerun"]["speedup_vs_fastest_seed_candidate"] = 64 * min(
            r["seconds"] for r in base["candidates_run"]) / out["leantune"]["search_seconds"]
        print("rerun", saved["leantune_rerun"])
        print("wrote", save(result_name("icl_search_speed", args.model), saved))
        return

    # the seed loop, on the same demonstrations and validation examples
    data = make_icl_data(task, 5, args.n_val, 20, args.seed)
    prefix = build_prefix(task, data.demos)
    contexts = [task.render_context(r) for r in data.val]
    labels = [r["label"] for r in data.val]
    rows = []
    for back, module, rate in SUBSET[:args.subset]:
        layer = arch.num_layers + back
        originals = [(m, m.read()) for m in (arch.matrix(layer, n) for n in module_matrices(arch, module))]
        t_svd = time.perf_counter()
        if rate > 0:
            for m, w in originals:
                seed_low_rank(w, rate, exact=False)  # timed: what the seed code computes per candidate
        t_svd = time.perf_counter() - t_svd
        if rate > 0:
            for m, w in originals:
                m.write(seed_low_rank(w, rate, exact=True).to(w.dtype))  # scored: exact SVD for comparison
        t_eval = time.perf_counter()
        preds = seed_predict(model, tok, prefix, contexts, list(task.label_words))
        t_eval = time.perf_counter() - t_eval
        for m, w in originals:
            m.write(w)
        key = f"L{layer}:{module}:{rate:g}" if rate > 0 else "baseline"
        ours = journal[key]["val_predictions"]
        acc = sum(p == y for p, y in zip(preds, labels)) / len(labels)
        rows.append({"layer": layer, "module": module, "rate": rate, "seconds": t_svd + t_eval,
                     "svd_lowrank_seconds": t_svd, "accuracy": acc, "leantune_accuracy": journal[key]["val_accuracy"],
                     "prediction_agreement": sum(a == b for a, b in zip(preds, ours)) / len(ours)})
        print("seed", rows[-1], flush=True)
    per_cand = sum(r["seconds"] for r in rows) / len(rows)
    out["seed_loop"] = {"candidates_run": rows, "mean_seconds_per_candidate": per_cand,
                        "extrapolated_seconds_for_64": per_cand * 64}
    out["speedup_total_time"] = per_cand * 64 / out["leantune"]["search_seconds"]
    out["min_prediction_agreement"] = min(r["prediction_agreement"] for r in rows)
    out["max_accuracy_gap_points"] = max(abs(r["accuracy"] - r["leantune_accuracy"]) * 100 for r in rows)
    print(f"speedup {out['speedup_total_time']:.1f}x (seed loop extrapolated to 64 candidates from {len(rows)})")
    print("wrote", save(result_name("icl_search_speed", args.model), out))


def seed_check(args) -> None:
    from common import RESULTS

    task, tok, model = get_task("sst2"), gpt2_tokenizer_offline(), gpt2_small_random()
    data = make_icl_data(task, 5, args.n_val, 20, args.seed)
    t0 = time.perf_counter()
    seed_predict(model, tok, build_prefix(task, data.demos), [task.render_context(r) for r in data.val],
                 list(task.label_words))
    seconds = time.perf_counter() - t0
    saved = json.loads((RESULTS / "icl_search_speed.json").read_text())
    saved["seed_loop_quiet_check"] = {"candidate": "rate 0 (scoring only)", "seconds": seconds, "machine": machine(),
                                      "note": "one seed-loop candidate rerun alone on the idle machine"}
    if "leantune_rerun" in saved:
        saved["leantune_rerun"]["speedup_vs_quiet_seed_candidate"] = 64 * seconds / \
            saved["leantune_rerun"]["search_seconds"]
    print("seed check", saved["seed_loop_quiet_check"])
    print("wrote", save("icl_search_speed", saved))


if __name__ == "__main__":
    main()
