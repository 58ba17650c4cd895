"""The guarded selection: a winner that only moves the label prior is not adopted; --guard off adopts it."""

from __future__ import annotations

import json

import pytest
import torch

import leantune.svd.api as svd_api
from leantune.cli import main
from leantune.icl.evaluator import EvalResult, with_stats
from leantune.models import gpt2_tokenizer_offline, load_model
from leantune.recipes.icl_search import icl_search
from leantune.svd.selection import SelectionRule, confirm, decide, label_shift
from tiny import save_tiny_lm

TOK = gpt2_tokenizer_offline()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("gpt2x2"), "gpt2", 2, TOK)


class ConstantEvaluator:
    """Answers label 0 ("negative") for every example while the model is unedited, label 1 once any weight
    changed: the shape of an SVD edit that only flips a model's favourite label."""

    reuses_layers = False
    label_names = ("negative", "positive")

    def __init__(self, examples, reference):
        self.examples, self.reference = examples, reference

    @property
    def gold(self):
        return [r["label"] for r in self.examples]

    tokens_per_evaluation = 1

    def layer_reuse(self, *a, **k):  # noqa: D401 - evaluated in full
        return None

    def calibration_control(self, model, tokenizer, result):
        return None

    def evaluate(self, model, progress=False, desc=""):
        edited = any(not torch.equal(p, self.reference[n]) for n, p in model.state_dict().items())
        label = 1 if edited else 0
        preds = [{"idx": r["idx"], "label": r["label"], "pred": label, "correct": label == r["label"]}
                 for r in self.examples]
        correct = sum(p["correct"] for p in preds)
        metrics = with_stats({"accuracy": correct / len(preds), "n": len(preds), "correct": correct,
                              "tokens_processed": 1, "seconds": 0.0}, self.gold, [p["pred"] for p in preds],
                             self.label_names)
        return EvalResult(metrics, preds)


@pytest.fixture
def constant_evaluator(monkeypatch, tiny):
    reference = {n: p.clone() for n, p in load_model(str(tiny), head="causal-lm").state_dict().items()}

    def fake(tok, task, data, examples, evaluator, calibrate, batch_size, max_length):
        return ConstantEvaluator(examples, reference)

    monkeypatch.setattr(svd_api, "_evaluator", fake)


SEARCH = dict(task="sst2", strategy="grid", modules="mlp", layers="1", rates="0,0.5", shots=1, n_val=60, n_test=60,
              seed=0, progress=False)


def test_guard_refuses_a_label_flip_and_says_why(tiny, tmp_path, constant_evaluator):
    s = icl_search(str(tiny), out=str(tmp_path / "on"), **SEARCH)
    positives = s["test"]["stats"]["before"]["confusion"][1]
    assert sum(positives) > 30  # SST-2 dev is mostly positive: the flip "gains" accuracy
    sel = s["selection"]
    assert sel["guard"] == "on" and sel["winner"] == [{"layer": 1, "module": "mlp", "rate": 0.5}]
    assert not sel["adopted"] and s["chosen_edits"] == []
    assert "label-prior shift" in sel["reason"] and sel["label_shift"]["flagged"]
    assert s["test"]["after"] == s["test"]["before"]  # nothing adopted, nothing changed
    assert s["test"]["winner"]["accuracy"] > s["test"]["before"]  # what it refused, recorded
    saved = json.loads((tmp_path / "on" / "summary.json").read_text())
    assert saved["selection"]["reason"] == sel["reason"]
    assert json.loads((tmp_path / "on" / "edit.json").read_text())["edits"] == []


def test_guard_off_adopts_it_as_the_paper_would(tiny, tmp_path, constant_evaluator):
    s = icl_search(str(tiny), out=str(tmp_path / "off"), guard="off", **SEARCH)
    assert s["selection"]["adopted"] and s["chosen_edits"] == [{"layer": 1, "module": "mlp", "rate": 0.5}]
    assert s["test"]["after"] > s["test"]["before"]
    assert s["selection"]["label_shift"]["flagged"]  # still measured and reported
    assert s["config"]["guard"] == "off"


def test_cli_prints_the_decision_the_statistics_and_a_warning(tiny, tmp_path, constant_evaluator, capsys):
    argv = ["icl", "search", "--model", str(tiny), "--task", "sst2", "--strategy", "grid", "--modules", "mlp",
            "--layers", "1", "--rates", "0,0.5", "--shots", "1", "--n-val", "60", "--n-test", "60",
            "--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no edit adopted (guard on)" in out and "label-prior shift" in out
    assert "warning: label shift" in out
    assert "95% CI [" in out and "McNemar p" in out and "constant predictor" in out
    assert (tmp_path / "cli" / "report.html").is_file()


def test_confirmation_decides_when_there_is_no_shift():
    rule = SelectionRule("on", "accuracy", 0.05)
    gold = [i % 2 for i in range(200)]
    before = [g if i % 4 else 1 - g for i, g in enumerate(gold)]  # 75 % right, both labels
    noise = [g if i % 4 != 1 else 1 - g for i, g in enumerate(gold)]  # as many fixed as broken
    better = [g if i % 10 else 1 - g for i, g in enumerate(gold)]  # 90 %: 50 gained, 20 lost
    c = confirm(gold, before, noise, rule)
    assert not c["confirmed"]
    adopted, why = decide(rule, False, label_shift(gold, before, noise), c)
    assert not adopted and why.startswith("not confirmed on 200 held-out examples")
    c = confirm(gold, before, better, rule)
    assert c["confirmed"] and c["change"]["gained"] > c["change"]["lost"]
    assert decide(rule, False, label_shift(gold, before, better), c)[0]
    assert decide(SelectionRule("off"), False, label_shift(gold, before, noise), None)[0]  # the paper's rule


def test_label_shift_respects_a_skewed_gold_distribution():
    gold = [0] * 96 + [1] * 4
    shifted = label_shift(gold, [1] * 100, [0] * 100)  # 0.04 -> 0.96 by switching the constant answer
    assert shifted["flagged"] and "balanced accuracy does not" in shifted["reasons"][0]
    assert not any("answers" in r for r in shifted["reasons"])  # 100 % 'negative' is close to the gold's 96 %
    assert "answers" in label_shift([i % 2 for i in range(100)], [i % 2 for i in range(100)], [0] * 100)["reasons"][-1]


@pytest.mark.parametrize("bad,msg", [(dict(guard="maybe"), "--guard"), (dict(select="f2"), "--select"),
                                     (dict(confirm_alpha=1.5), "--confirm-alpha"), (dict(n_confirm=-1), "--n-confirm")])
def test_bad_selection_options_are_one_line(tiny, tmp_path, bad, msg, capsys):
    flags = {"guard": "--guard", "select": "--select", "confirm_alpha": "--confirm-alpha", "n_confirm": "--n-confirm"}
    (k, v), = bad.items()
    argv = ["icl", "search", "--model", str(tiny), "--task", "sst2", "--out", str(tmp_path / "x"), flags[k], str(v)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]


def test_report_rebuilds_from_the_folder_alone_old_folders_included(tiny, tmp_path, constant_evaluator, capsys):
    run = tmp_path / "r"
    icl_search(str(tiny), out=str(run), **SEARCH)
    page = (run / "report.html").read_text()
    for needle in ("No edit adopted", "label-prior shift", "Statistics", "95% CI", "constant predictor",
                   "Test confusion matrices", "refused winner would have gained", "data:image/png;base64,"):
        assert needle in page, needle
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").read_text() == page  # the page depends only on the files
    # a summary written before the statistics existed still gets a page with what it has
    old = json.loads((run / "summary.json").read_text())
    for k in ("selection", "calibration_control"):
        old.pop(k)
    for split in ("validation", "test"):
        old[split] = {k: old[split][k] for k in ("before", "after", "n")}
    (run / "summary.json").write_text(json.dumps(old))
    assert main(["report", str(run)]) == 0 and "Chosen: none" in (run / "report.html").read_text()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no summary.json" in err[0]


def test_a_significant_change_that_lowers_the_metric_is_said_as_such():
    rule = SelectionRule("on", "balanced_accuracy", 0.05)
    gold = [0] * 180 + [1] * 20
    before = [0] * 170 + [1] * 10 + [1] * 20  # minority class all right, 10 majority errors
    c = confirm(gold, before, [0] * 200, rule)
    assert c["change"]["gained"] == 10 and c["change"]["lost"] == 20 and not c["confirmed"]
    gold2 = [0] * 100 + [1] * 100
    before2 = [0] * 70 + [1] * 30 + [1] * 100  # 170 right
    after2 = [0] * 100 + [0] * 60 + [1] * 40  # 140 right: fewer, and worse balanced
    c2 = confirm(gold2, after2, before2, rule)  # 60 gained, 30 lost, balanced accuracy up too
    assert c2["confirmed"]
    fake = {"n": 200, "p_one_sided": 0.001, "confirmed": False, "metric_change": -0.08,
            "change": {"gained": 30, "lost": 10}}
    adopted, why = decide(rule, False, {"flagged": False, "reasons": []}, fake)
    assert not adopted and "but balanced_accuracy changes -8.0 pts" in why and ">=" not in why


def test_an_old_run_folder_named_by_its_resolved_path_still_resumes():
    from leantune.models import resolve
    from leantune.svd.api import _same_model

    assert _same_model(resolve("lab-icl"), "lab-icl")  # written before portable names; resumed by the alias
    assert not _same_model(resolve("lab-icl"), "gpt2")


def test_library_entry_refuses_an_encoder_loaded_with_an_lm_head():
    """BertLMHeadModel has output embeddings but no causal masking: one clear error, not a shape crash."""
    from leantune import evaluate_icl, load_tokenizer
    from leantune.errors import LeantuneError

    encoder = load_model("minilm", head="causal-lm")
    with pytest.raises(LeantuneError, match="is an encoder \\(bert\\), not a causal LM"):
        evaluate_icl(encoder, load_tokenizer("minilm"), "sst2", shots=1, n_eval=4)
