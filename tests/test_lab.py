"""The lab: synthetic generator, tokenizer, a shortened training run, the demo smoke path."""

import json
import random
from pathlib import Path

import torch

from leantune.lab.synthetic import (CLUSTERS_PER_CLASS, WORDS_PER_CLUSTER, draw_assignment, lab_task,
                                    training_sequence)
from leantune.lab.tokenizer import build_tokenizer
from leantune.tasks import load_split


def _cluster(w: str) -> int:
    return int(w[1:3])


def test_labels_vary_per_sequence_and_follow_clusters():
    rng = random.Random(0)
    mappings = set()
    for _ in range(300):
        words, targets = training_sequence(rng)
        mapping = {}
        for t in targets:
            x, label = words[t - 1], words[t]
            assert x.startswith("w")
            assert mapping.setdefault(_cluster(x), label) == label  # one label per cluster within a sequence
        mappings.add(tuple(sorted(mapping.items())))
    assert len(mappings) > 250  # a fresh mapping nearly every sequence: nothing fixed to memorize
    # every label word is used for many different clusters across sequences
    by_label = {}
    for m in mappings:
        for c, lab in m:
            by_label.setdefault(lab, set()).add(c)
    assert all(len(cs) >= 8 for cs in by_label.values())


def test_held_out_assignments_never_train():
    rng = random.Random(1)
    train = {draw_assignment(rng, held_out=False).combo() for _ in range(2000)}
    for i in range(50):
        task = lab_task(i)
        assert task.name == f"lab:{i}"
    held = {draw_assignment(random.Random(10_000 + i), held_out=True).combo() for i in range(50)}
    assert not train & held


def test_instance_splits_are_disjoint_and_balanced():
    task = lab_task(7)
    splits = {s: load_split(task, s) for s in ("train", "validation", "test")}
    words = {s: {r["x"] for r in rows} for s, rows in splits.items()}
    assert not words["train"] & words["validation"] and not words["train"] & words["test"]
    assert not words["validation"] & words["test"]
    half = WORDS_PER_CLUSTER // 2
    assert len(splits["train"]) == 2 * CLUSTERS_PER_CLASS * half
    for s, rows in splits.items():
        assert sum(r["label"] for r in rows) * 2 == len(rows)  # balanced classes
        for r in rows:  # every query shares a cluster with training (demonstration) words of its class
            assert any(_cluster(w) == _cluster(r["x"]) for w in words["train"])
    assert len(set(task.label_words)) == 2


def test_tokenizer_round_trips_and_prompt_joins():
    tok = build_tokenizer()
    ids = tok("w0101 red\n\nw0203").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "w0101", "red", "w0203"]
    assert tok("x").input_ids[1] == tok.unk_token_id


def test_short_training_run_is_deterministic(tmp_path):
    from leantune.lab.train import LabTrainConfig, train

    cfg = LabTrainConfig(steps=6, batch_size=8, layers=2, hidden=32, heads=2, intermediate=64, threads=1)
    a = train(cfg, tmp_path / "a", progress=False, eval_instances=2)
    b = train(cfg, tmp_path / "b", progress=False, eval_instances=2)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert a["shots"] == b["shots"] and [r["shots_per_class"] for r in a["shots"]] == [0, 1, 2, 4, 8]
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((tmp_path / "a" / "lab_train.json").read_text())["config"]["steps"] == 6


def test_committed_checkpoint_loads_by_alias_and_reports_its_shots_table():
    from leantune.lab.train import CHECKPOINT
    from leantune.models import load_model, resolve

    assert resolve("lab-icl") == str(CHECKPOINT)
    report = json.loads((CHECKPOINT / "lab_train.json").read_text())
    shots = {r["shots_per_class"]: r["accuracy"] for r in report["shots"]}
    assert abs(shots[0] - 0.5) < 0.1  # 0-shot: chance by construction
    assert min(shots[k] for k in (2, 4, 8)) > 0.8  # in-context learning (the 0.9 is not reached)
    doc = (Path(__file__).parents[1] / "docs" / "lab.md").read_text()
    for k, acc in shots.items():  # the documented shots table is the committed checkpoint's
        assert f"| {k} | {acc:.3f} |" in doc
    assert (CHECKPOINT / "model.safetensors").stat().st_size < 20e6
    model = load_model("lab-icl", head="causal-lm")
    assert model.config.model_type == report["config"]["arch"]


def test_demo_smoke_path_writes_the_report(tmp_path):
    from leantune.recipes.demo import demo

    report = demo(str(tmp_path / "demo"), quick=True, progress=False)
    text = report.read_text()
    assert "LoRA(QKV) lambda=1" in text and "LoRA(QV) lambda=4" in text  # the fine-tuning table
    assert "| validation |" in text or "validation" in text.split("(b)")[1]  # the SVD before/after table
    assert (report.parent / "svd_heatmap.png").stat().st_size > 1000
    results = json.loads((report.parent / "results.json").read_text())
    assert len(results["finetune"]) == 2 and results["svd_search"]["test"]["n"] > 0
    svd = results["svd_search"]  # the keep-less half runs on the real SmolLM2 weights, and says where they came from
    assert svd["model"] == "smollm2-135m" and svd["model_source"]["gguf"]["quantization"] == "Q4_1"
    assert "dequantized" in text


def test_study_runs_the_search_engine_and_equals_full_evaluations(tmp_path):
    """`lab study` evaluates its grid through the SVD search (layer reuse); every accuracy is the pooled
    accuracy of a full forward of the edited model."""
    from leantune.arch import get_arch
    from leantune.icl.evaluator import ICLEvaluator, PooledEvaluator
    from leantune.icl.splits import make_icl_data
    from leantune.lab.study import study
    from leantune.models import load_model, load_tokenizer
    from leantune.svd.edits import Edit, edited
    from leantune.svd.lowrank import SVDCache
    from leantune.tasks import get_task

    r = study("lab-icl", shots=(1,), seeds=(0,), instances=2, rates=(0.0, 0.9), out=str(tmp_path), progress=False)
    assert (tmp_path / "lab_study.json").is_file() and (tmp_path / "lab_study.png").stat().st_size > 1000
    model, tok = load_model("lab-icl", head="causal-lm"), load_tokenizer("lab-icl")
    arch = get_arch(model)
    assert len(r["results"]) == arch.num_layers * 2 * 2 and len(r["mean"]) == len(r["results"])
    evs = []
    for i in range(2):
        task = get_task(f"lab:{i}")
        data = make_icl_data(task, 1, None, None, seed=i, test_split="validation")
        evs.append(ICLEvaluator(tok, task, data.demos, data.test, batch_size=64))
    pooled, cache = PooledEvaluator(evs), SVDCache(arch, torch.float64)
    got = {(x["layer"], x["module"], x["rate"]): x["val_accuracy"] for x in r["results"]}
    assert got[(0, "mlp", 0.0)] == pooled.evaluate(model).metrics["accuracy"]
    for layer, module in ((arch.num_layers - 1, "mlp"), (1, "attn")):
        with edited(arch, [Edit(layer, module, 0.9)], cache):
            assert got[(layer, module, 0.9)] == pooled.evaluate(model).metrics["accuracy"]
