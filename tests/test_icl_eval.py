"""ICL evaluation: splits, determinism, exact counts, calibration, task files, one-line errors."""

import json

import pytest
import torch
import transformers as tf

from leantune.cli import main
from leantune.icl.evaluator import ICLEvaluator
from leantune.icl.splits import make_icl_data
from leantune.models import gpt2_tokenizer_offline
from leantune.tasks import get_task, load_task_file
from tiny import save_tiny_lm

TOK = gpt2_tokenizer_offline()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-gpt2")
    return save_tiny_lm(d, "gpt2", layers=2, tokenizer=TOK)


def test_splits_are_disjoint_balanced_and_seeded():
    task = get_task("cb")
    a = make_icl_data(task, shots=3, n_val=20, n_test=30, seed=1)
    b = make_icl_data(task, shots=3, n_val=20, n_test=30, seed=1)
    c = make_icl_data(task, shots=3, n_val=20, n_test=30, seed=2)
    assert a.manifest() == b.manifest() and a.manifest() != c.manifest()
    assert sorted(d["label"] for d in a.demos) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    demo, val = {d["idx"] for d in a.demos}, {r["idx"] for r in a.val}
    assert len(val) == 20 and not demo & val  # both from train, disjoint
    assert a.sources == {"test": "validation", "pool": "train"} and len(a.test) == 30


def test_single_split_task_carves_test_then_pool():
    task = get_task("boolq")
    d = make_icl_data(task, shots=2, n_val=10, n_test=25, seed=0)
    test, pool = {r["idx"] for r in d.test}, {r["idx"] for r in d.demos + d.val}
    assert len(test) == 25 and not test & pool


def test_counts_are_exact_and_per_class_adds_up(tiny_dir):
    task = get_task("sst2")
    data = make_icl_data(task, shots=1, n_val=None, n_test=37, seed=0)
    model = tf.AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    res = ICLEvaluator(TOK, task, data.demos, data.test).evaluate(model)
    m = res.metrics
    assert m["n"] == 37 == len(res.predictions)  # n, not n - 1
    assert m["correct"] == sum(p["correct"] for p in res.predictions)
    assert m["accuracy"] == m["correct"] / 37
    assert sum(c["n"] for c in m["per_class"].values()) == 37
    assert sum(c["predicted"] for c in m["per_class"].values()) == 37


def test_calibration_divides_by_content_free_probabilities(tiny_dir):
    task = get_task("sst2")
    data = make_icl_data(task, shots=1, n_val=None, n_test=20, seed=0)
    model = tf.AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    res = ICLEvaluator(TOK, task, data.demos, data.test, calibrate=True).evaluate(model)
    cf = torch.tensor(res.metrics["content_free_probs"])
    assert abs(float(cf.sum()) - 1) < 1e-6
    for p in res.predictions:
        lp = torch.log_softmax(torch.tensor(p["logprobs"]), 0)
        assert p["pred"] == int((lp - cf.log()).argmax())


def test_cli_same_seed_same_metrics(tiny_dir, tmp_path):
    args = ["icl", "eval", "--model", str(tiny_dir), "--task", "copa", "--shots", "1", "--n-eval", "16",
            "--seed", "5", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in "ab")
    assert "acc_norm" in a and a["n"] == 16
    for m in (a, b):
        m.pop("seconds")  # wall time is the one field that may differ
        m["config"].pop("out")
    assert a == b
    assert (tmp_path / "a" / "predictions.jsonl").read_text() == (tmp_path / "b" / "predictions.jsonl").read_text()


def test_config_file_gives_the_same_run(tiny_dir, tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"model: {tiny_dir}\ntask: sst2\nshots: 1\nn-eval: 8\nseed: 2\n")
    assert main(["icl", "eval", "--config", str(cfg), "--quiet", "--out", str(tmp_path / "c")]) == 0
    m = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert m["n"] == 8 and m["config"]["seed"] == 2


def _task_file(tmp_path, **over):
    rows = [{"text": f"item {i}", "y": ["neg", "pos"][i % 2]} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "mine", "data": {"train": "train.jsonl", "validation": "train.jsonl"}, "label_field": "y",
            "labels": ["neg", "pos"], "template": "Review: {text}\nSentiment:", "label_words": ["bad", "good"]}
    spec.update(over)
    path = tmp_path / "task.json"
    path.write_text(json.dumps(spec))
    return path


def test_custom_task_file_runs(tiny_dir, tmp_path):
    path = _task_file(tmp_path)
    task = load_task_file(str(path))
    assert task.render_context({"text": "x"}) == "Review: x\nSentiment:" and task.num_labels == 2
    assert main(["icl", "eval", "--model", str(tiny_dir), "--task", str(path), "--shots", "2", "--n-eval", "6",
                 "--quiet"]) == 0


@pytest.mark.parametrize("case,expected", [
    (["--task", "nosuchtask"], "unknown task 'nosuchtask'"),
    (["--task", "sst2", "--shots", "5000"], "5000 shots per class"),
    (["--task", "TASKFILE:template"], "names field 'missing'"),
    (["--task", "TASKFILE:labelword"], "tokenizes to nothing"),
    (["--task", "TASKFILE:empty"], "is empty"),
    (["--task", "TASKFILE:unseen"], "label value 'maybe'"),
])
def test_bad_input_is_one_line_exit_2(tiny_dir, tmp_path, capsys, case, expected):
    if case[1].startswith("TASKFILE:"):
        kind = case[1].split(":")[1]
        over = {"template": {"template": "Review: {missing}"}, "labelword": {"label_words": ["bad", "  "]},
                "empty": {}, "unseen": {}}[kind]
        path = _task_file(tmp_path, **over)
        if kind == "empty":
            (tmp_path / "train.jsonl").write_text("")
        if kind == "unseen":
            (tmp_path / "train.jsonl").write_text(json.dumps({"text": "a", "y": "maybe"}) + "\n")
        case = ["--task", str(path)]
    code = main(["icl", "eval", "--model", str(tiny_dir), "--shots", "1", "--quiet", *case])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("leantune")]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err
