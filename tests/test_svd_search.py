"""`leantune icl search` / `apply`: journal, resume after SIGKILL, sharding, exports, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from leantune.cli import main
from leantune.models import gpt2_tokenizer_offline, load_model
from leantune.recipes.icl_search import icl_search
from tiny import TINY_CONFIGS, save_tiny_lm

TOK = gpt2_tokenizer_offline()
COMMON = dict(task="sst2", shots=2, n_val=40, n_test=40, seed=1, progress=False)


def _save(path, family="gpt2", layers=4):
    return save_tiny_lm(path, family, layers, TOK)


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("gpt2x4"))


def _strip(summary):
    s = json.loads(json.dumps(summary))
    for k in ("seconds", "candidates", "tokens_processed", "versions"):
        s.pop(k)
    s["config"].pop("out")
    return s


@pytest.mark.parametrize("strategy", ["paper", "grid", "greedy"])
def test_strategies_write_all_outputs(tiny4, tmp_path, strategy):
    # guard off: the paper's plain selection, whose winner is the best validation candidate by construction
    s = icl_search(str(tiny4), strategy=strategy, layers="2-3", rates="0,0.5,0.9", out=str(tmp_path), guard="off",
                   **COMMON)
    for f in ("run.json", "candidates.jsonl", "summary.json", "edit.json", "heatmap.png", "test_predictions.jsonl",
              "report.html"):
        assert (tmp_path / f).exists(), f
    lines = [json.loads(x) for x in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    keys = [x["key"] for x in lines]
    assert len(keys) == len(set(keys)) and keys[0] == "baseline"
    if strategy == "grid":
        assert len(keys) == 1 + 2 * 2 * 2
    if strategy == "paper":
        for module, info in s["paper_layer_choice"].items():
            conds = {int(k): v for k, v in info["condition_numbers"].items()}
            top = sorted(conds, key=lambda layer: -conds[layer])[:3]
            assert info["chosen_layer"] == max(top)
    best = max(x["val_accuracy"] for x in lines)
    assert s["validation"]["after"] == best or strategy == "greedy"
    assert s["validation"]["after"] >= s["validation"]["before"]
    edit = json.loads((tmp_path / "edit.json").read_text())
    assert edit["base_model"]["model_type"] == "gpt2" and edit["svd_dtype"] == "float32"


def test_resume_after_sigkill_skips_finished_and_ends_the_same(tiny4, tmp_path):
    args = [sys.executable, "-m", "leantune", "icl", "search", "--model", str(tiny4), "--task", "sst2",
            "--strategy", "grid", "--layers", "2-3", "--shots", "2", "--n-val", "40", "--n-test", "40", "--seed", "1",
            "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = killed / "candidates.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 5):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = [json.loads(x)["key"] for x in journal.read_text().splitlines() if x.endswith("}")]
    assert 5 <= len(done_before) < 29, "the kill must land mid-search"
    assert not (killed / "summary.json").exists()

    resumed = icl_search(str(tiny4), strategy="grid", layers="2-3", out=str(killed), **COMMON)
    assert resumed["candidates"]["evaluated_this_run"] == 29 - len(done_before)
    keys = [json.loads(x)["key"] for x in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 29  # nothing redone

    clean = icl_search(str(tiny4), strategy="grid", layers="2-3", out=str(tmp_path / "clean"), **COMMON)
    assert _strip(resumed) == _strip(clean)


def test_other_arguments_on_an_existing_dir_are_refused(tiny4, tmp_path, capsys):
    base = ["icl", "search", "--model", str(tiny4), "--task", "sst2", "--shots", "1", "--n-val", "10",
            "--n-test", "10", "--layers", "3", "--rates", "0,0.5", "--quiet", "--out", str(tmp_path)]
    assert main(base) == 0
    assert main(base) == 0  # same arguments: resumes (nothing to do)
    assert main(base[:-2] + ["--seed", "7", "--out", str(tmp_path)]) == 2
    assert "different arguments (seed)" in capsys.readouterr().err


def test_two_processes_give_the_same_candidates_as_one(tiny4, tmp_path):
    common = ["--model", str(tiny4), "--task", "sst2", "--strategy", "grid", "--layers", "2-3", "--rates",
              "0,0.5,0.9,0.99", "--shots", "2", "--n-val", "30", "--n-test", "20", "--seed", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: torchrun binds a free rendezvous port itself (a fixed port failed whenever another job held it)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "leantune", "icl", "search", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert main(["icl", "search", *common, "--out", str(tmp_path / "one")]) == 0

    def results(d):
        out = {}
        for p in sorted(d.glob("candidates*.jsonl")):
            for line in p.read_text().splitlines():
                r = json.loads(line)
                out[r["key"]] = (r["val_correct"], r["n_val"])
        return out

    assert len(list((tmp_path / "two").glob("candidates.rank*.jsonl"))) == 2
    assert results(tmp_path / "two") == results(tmp_path / "one")
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert s1["chosen_edits"] == s2["chosen_edits"] and s1["test"] == s2["test"]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_apply_factorized_equals_dense_and_is_smaller(tmp_path, family):
    model_dir = _save(tmp_path / "m", family, layers=2)
    edit = {"format": "leantune-svd-edit/1", "svd_dtype": "float32", "edits": [
        {"layer": 1, "module": "mlp", "rate": 0.9}, {"layer": 0, "module": "v", "rate": 0.75},
        {"layer": 0, "module": "q", "rate": 0.5}],
        "base_model": {"name": str(model_dir), "model_type": TINY_CONFIGS[family]().model_type, "num_layers": 2,
                       "hidden_size": 32}}
    model = load_model(str(model_dir), head="causal-lm")
    from leantune.svd.edits import edit_record, Edit

    edit = edit_record(model, str(model_dir), [Edit(**e) for e in edit["edits"]], "float32")
    (tmp_path / "edit.json").write_text(json.dumps(edit))
    assert main(["icl", "apply", "--model", str(model_dir), "--edit", str(tmp_path / "edit.json"),
                 "--out", str(tmp_path / "dense")]) == 0
    assert main(["icl", "apply", "--model", str(model_dir), "--edit", str(tmp_path / "edit.json"),
                 "--out", str(tmp_path / "fact"), "--factorize"]) == 0
    dense = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "dense").eval()  # plain transformers
    fact = load_model(str(tmp_path / "fact"), head="causal-lm")
    x = torch.tensor([TOK("the film was a quiet triumph").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(fact(x).logits, dense(x).logits, atol=1e-4, rtol=1e-4)
    d_size = (tmp_path / "dense" / "model.safetensors").stat().st_size
    f_size = (tmp_path / "fact" / "leantune_factorized.safetensors").stat().st_size
    assert f_size < d_size
    n_dense = sum(t.numel() for t in load_file(tmp_path / "dense" / "model.safetensors").values())
    n_fact = sum(t.numel() for k, t in load_file(tmp_path / "fact" / "leantune_factorized.safetensors").items()
                 if not k.endswith(("rows", "rows_0", "rows_1")) and "rows_" not in k)
    assert n_fact < n_dense
    # eval --edit on the base model == the dense export
    assert main(["icl", "eval", "--model", str(model_dir), "--task", "sst2", "--shots", "1", "--n-eval", "8",
                 "--edit", str(tmp_path / "edit.json"), "--quiet", "--out", str(tmp_path / "e1")]) == 0
    assert main(["icl", "eval", "--model", str(tmp_path / "dense"), "--task", "sst2", "--shots", "1", "--n-eval",
                 "8", "--quiet", "--out", str(tmp_path / "e2")]) == 0
    p1, p2 = ([json.loads(x)["logprobs"] for x in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
              for d in ("e1", "e2"))
    torch.testing.assert_close(torch.tensor(p1), torch.tensor(p2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("extra,expected", [
    (["--rates", "0,1.0"], "outside [0, 1)"),
    (["--rates", "0,-0.1"], "outside [0, 1)"),
    (["--layers", "9"], "layer 9 is out of range"),
    (["--modules", "mlp_gate"], "module 'mlp_gate' is unknown for gpt2"),
    (["--strategy", "random"], "unknown strategy"),
])
def test_bad_search_input_is_one_line_exit_2(tiny4, tmp_path, capsys, extra, expected):
    code = main(["icl", "search", "--model", str(tiny4), "--task", "sst2", "--shots", "1", "--n-val", "8",
                 "--n-test", "8", "--quiet", "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("leantune")]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err


def test_edit_for_another_model_is_refused(tiny4, tmp_path, capsys):
    other = _save(tmp_path / "llama", "llama", layers=2)
    edit = {"format": "leantune-svd-edit/1", "svd_dtype": "float32", "edits": [{"layer": 3, "module": "mlp",
            "rate": 0.5}], "matrices": [], "base_model": {"name": str(tiny4), "model_type": "gpt2", "num_layers": 4,
                                                         "hidden_size": 32}}
    (tmp_path / "edit.json").write_text(json.dumps(edit))
    assert main(["icl", "eval", "--model", str(other), "--task", "sst2", "--shots", "1", "--n-eval", "4",
                 "--edit", str(tmp_path / "edit.json"), "--quiet"]) == 2
    assert "was made for" in capsys.readouterr().err


def test_calibrated_search_baseline_equals_the_evaluation_of_the_unedited_model():
    """The baseline candidate comes from the evaluator's layer reuse (recorded once); with --calibrate its
    content-free prompt is scored too (it once reused the baseline's own scores in its place)."""
    from leantune import load_model, load_tokenizer, search_svd
    from leantune.icl.evaluator import ICLEvaluator
    from leantune.icl.splits import make_icl_data
    from leantune.tasks import get_task

    model, tok = load_model("lab-icl", head="causal-lm"), load_tokenizer("lab-icl")
    s = search_svd(model, tok, "lab:1", strategy="grid", modules="mlp", layers="1,2", rates=(0.5,), shots=1,
                   n_val=24, n_test=8, seed=3, calibrate=True)
    task = get_task("lab:1")
    data = make_icl_data(task, 1, 24, 8, 3, "default", test_split="validation")
    direct = ICLEvaluator(tok, task, data.demos, data.val, calibrate=True).evaluate(model).metrics
    assert s["validation"]["before"] == direct["accuracy"]
