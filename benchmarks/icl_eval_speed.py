"""ICL evaluation speed: leantune vs lm-evaluation-harness vs the seed paper's loop, side by side.

``--model smollm2-135m`` (the headline: real pretrained weights) or ``gpt2-random`` (GPT-2-small-shaped
random model with the real GPT-2 tokenizer, a second row); SST-2 from ../shared/data, 10-shot (5 per class,
fixed by seed), 200 examples of the dev split. All three score the same prompts; we report wall seconds,
accuracy, per-example agreement, and the speed-up bound that the tokens each side must process allow:
lm-eval encodes prefix + query for every example (one forward per context: both SST-2 label words are
single tokens, which lm-eval scores from one forward) and computes full-vocabulary logits at every
position; leantune encodes the demonstrations once and computes logits at scored positions only.
bound = lm-eval's (body + head) token cost / leantune's body token cost + scored-position head cost.

    .venv/bin/python benchmarks/icl_eval_speed.py --model smollm2-135m [--n 200] [--shots 5] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import bench_model, machine, result_name, save
from seed_baseline import seed_predict

from leantune.icl.evaluator import ICLEvaluator, build_prefix
from leantune.icl.lm_eval_task import write_lm_eval_task
from leantune.icl.splits import make_icl_data
from leantune.tasks import get_task


def run_lm_eval(model_dir: Path, task, data, shots_total: int, batch_size: int, work: Path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks_dir = write_lm_eval_task(task, data.demos, data.test, work, name="bench_sst2")
    t0 = time.perf_counter()
    res = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["bench_sst2"],
                          num_fewshot=shots_total, batch_size=batch_size, device="cpu",
                          task_manager=TaskManager(include_path=str(tasks_dir)), log_samples=True)
    seconds = time.perf_counter() - t0
    preds = {s["doc"]["idx"]: int(max(range(2), key=lambda j: s["filtered_resps"][j][0]))
             for s in res["samples"]["bench_sst2"]}
    return seconds, res["results"]["bench_sst2"]["acc,none"], preds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--shots", type=int, default=5, help="per class")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="gpt2-random", help="gpt2-random or a leantune model name (smollm2-135m)")
    args = ap.parse_args()

    task = get_task("sst2")
    model, tok, model_dir, what = bench_model(args.model)
    data = make_icl_data(task, args.shots, None, args.n, args.seed)
    out = {"machine": machine(), "setup": {"model": what,
                                           "task": "sst2 (../shared/data, dev split)", "n": args.n,
                                           "shots_per_class": args.shots, "batch_size": args.batch_size}}

    t0 = time.perf_counter()
    ev = ICLEvaluator(tok, task, data.demos, data.test, batch_size=args.batch_size)
    res = ev.evaluate(model)
    ours_s = time.perf_counter() - t0
    ours = {r["idx"]: r["pred"] for r in res.predictions}
    out["leantune"] = {"seconds": ours_s, "accuracy": res.metrics["accuracy"],
                       "tokens_processed": res.metrics["tokens_processed"], "prefix_tokens": len(ev.plan.prefix_ids)}
    print("leantune", out["leantune"], flush=True)

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        if model_dir is None:
            model_dir = work / "model"
            model.save_pretrained(model_dir)
            tok.save_pretrained(model_dir)
        le_s, le_acc, le_preds = run_lm_eval(model_dir, task, data, 2 * args.shots, args.batch_size, work)
    out["lm_eval"] = {"seconds": le_s, "accuracy": le_acc,
                      "agreement_with_leantune": sum(le_preds[i] == ours[i] for i in ours) / len(ours)}
    print("lm_eval", out["lm_eval"], flush=True)

    prefix = build_prefix(task, data.demos)
    t0 = time.perf_counter()
    seed_preds = seed_predict(model, tok, prefix, [task.render_context(r) for r in data.test], list(task.label_words))
    seed_s = time.perf_counter() - t0
    labels = [r["label"] for r in data.test]
    out["seed_loop"] = {"seconds": seed_s, "accuracy": sum(p == y for p, y in zip(seed_preds, labels)) / len(labels),
                        "agreement_with_leantune": sum(p == ours[r["idx"]] for p, r in zip(seed_preds, data.test))
                        / len(labels)}
    out["speedup_vs_lm_eval"] = le_s / ours_s
    out["token_bound"] = token_bound(model, tok, task, data, res.metrics["tokens_processed"])
    out["fraction_of_bound"] = out["speedup_vs_lm_eval"] / out["token_bound"]["bound"]
    out["speedup_vs_seed_loop"] = seed_s / ours_s
    print("seed", out["seed_loop"], flush=True)
    print(f"speedup: {out['speedup_vs_lm_eval']:.1f}x vs lm_eval (token bound {out['token_bound']['bound']:.1f}x, "
          f"{out['fraction_of_bound']:.0%} of it), {out['speedup_vs_seed_loop']:.1f}x vs seed loop")
    print("wrote", save(result_name("icl_eval_speed", args.model), out))


def token_bound(model, tok, task, data, ours_tokens: int) -> dict:
    """The speed-up over lm-eval that the work each side must do allows (a cost model in token units)."""
    prefix = build_prefix(task, data.demos)
    lm_eval_tokens = sum(len(tok(prefix + task.render_context(r)).input_ids) for r in data.test)
    head = model.get_output_embeddings().weight.numel()  # multiply-adds per position for the vocabulary logits
    body = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    if not model.config.tie_word_embeddings:
        body -= head
    scored = len(data.test) * len(task.label_words)  # positions where leantune computes logits (upper estimate)
    ours = ours_tokens * body + scored * head
    theirs = lm_eval_tokens * (body + head)
    return {"lm_eval_tokens": lm_eval_tokens, "leantune_tokens": ours_tokens, "body_params": body,
            "head_params": head, "bound": theirs / ours}


if __name__ == "__main__":
    main()
