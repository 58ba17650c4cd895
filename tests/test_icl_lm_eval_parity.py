"""Peer parity: lm-evaluation-harness on the same tiny model, prompts and fixed demonstrations."""

import json

import torch
import transformers as tf

from leantune.icl.lm_eval_task import write_lm_eval_task
from leantune.recipes.icl_eval import icl_eval
from leantune.icl.splits import make_icl_data
from leantune.models import gpt2_tokenizer_offline
from leantune.tasks import get_task
from tiny import TINY_CONFIGS

import lm_eval  # noqa: F401  (a dev dependency: the parity test must run, never skip)


def test_accuracy_and_predictions_match_lm_eval(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = TINY_CONFIGS["gpt2"]()
    cfg.vocab_size, cfg.n_positions = 50257, 1024
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "model")
    gpt2_tokenizer_offline().save_pretrained(tmp_path / "model")

    task = get_task("sst2")
    shots, n_eval, seed = 2, 40, 3
    ours = icl_eval(str(tmp_path / "model"), "sst2", shots=shots, n_eval=n_eval, seed=seed, batch_size=8,
                    out=str(tmp_path / "ours"), progress=False)

    # the same demonstrations (in our order) and the same test examples, as an lm-eval task on local files
    data = make_icl_data(task, shots, None, n_eval, seed)
    tasks_dir = write_lm_eval_task(task, data.demos, data.test, tmp_path, name="lt_sst2")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    res = simple_evaluate(model="hf", model_args=f"pretrained={tmp_path / 'model'},dtype=float32",
                          tasks=["lt_sst2"], num_fewshot=2 * shots, batch_size=8, device="cpu",
                          task_manager=TaskManager(include_path=str(tasks_dir)), log_samples=True)
    theirs = res["results"]["lt_sst2"]["acc,none"]
    assert abs(ours["accuracy"] - theirs) * 100 <= 0.5

    # and example by example: the same log-likelihoods, the same prompt
    by_idx = {json.loads(line)["idx"]: json.loads(line) for line in open(tmp_path / "ours" / "predictions.jsonl")}
    samples = res["samples"]["lt_sst2"]
    assert len(samples) == n_eval
    for s in samples:
        mine = by_idx[s["doc"]["idx"]]
        lls = [r[0] for r in s["filtered_resps"]]
        assert max(abs(a - b) for a, b in zip(lls, mine["logprobs"])) < 1e-3
    prompt = samples[0]["arguments"][0][0]
    from leantune.icl.evaluator import build_prefix

    first = next(r for r in data.test if r["idx"] == samples[0]["doc"]["idx"])
    assert prompt == build_prefix(task, data.demos) + task.render_context(first)
