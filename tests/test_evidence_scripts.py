"""The evidence scripts resume without redoing finished units and rebuild their tables from the JSONL alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import evidence_finetune as ft  # noqa: E402
import evidence_icl as icl  # noqa: E402
from common import replace_block  # noqa: E402


def test_plain_winner_is_rederived_with_the_search_tie_breaking():
    row = _icl_row("sst2", "deep")
    row["candidates"] = [{"layer": 28, "module": "mlp", "rate": 0.5, "val_accuracy": 0.55},
                         {"layer": 29, "module": "attn", "rate": 0.5, "val_accuracy": 0.55},
                         {"layer": 29, "module": "mlp", "rate": 0.5, "val_accuracy": 0.55},
                         {"layer": 29, "module": "mlp", "rate": 0.1, "val_accuracy": 0.50}]
    assert icl.plain_winner(row) == [{"layer": 29, "module": "mlp", "rate": 0.5}]  # deeper, then mlp listed first
    row["candidates"] = [{"layer": 29, "module": "mlp", "rate": 0.5, "val_accuracy": 0.5}]  # a tie: unedited wins
    assert icl.plain_winner(row) == []


def _change(d, p):
    return {"accuracy_change": d, "accuracy_change_ci95": [d - 0.05, d + 0.05], "mcnemar_p": p, "gained": 1, "lost": 1}


def test_guard_tables_come_from_the_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(icl, "DOCS", tmp_path)
    monkeypatch.setattr(icl, "GUARD_JOURNAL", tmp_path / "none.jsonl")
    brief = {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.4, "majority_rate": 0.6,
             "top_prediction": "a", "top_prediction_share": 0.9}
    kept, refused = _icl_row("sst2", "deep", after=0.6), _icl_row("rte", "deep", before=0.5, after=0.5)
    for r, adopted, d, p in ((kept, True, 0.1, 0.001), (refused, False, -0.1, 0.01)):
        r.update(test_before_stats=brief, n_confirm=200,
                 plain={"winner": [{"layer": 29, "module": "mlp", "rate": 0.5}], "test_after": 0.5 + d,
                        "test_change": _change(d, p)},
                 guard={"adopted": adopted, "reason": "x", "label_shift": {"flagged": False},
                        "confirmation": {"n": 200, "p_one_sided": 0.01 if adopted else 0.3, "confirmed": adopted,
                                         "gained": 30, "lost": 10}, "test_after": 0.5 + d if adopted else 0.5},
                 calibration={"test": 0.55, "test_change": _change(0.05, 0.2), "matches_edit_gain": False})
    md = icl.summarize([kept, refused])
    assert "| sst2 s0 deep | 0.600 | 0.500 | 0.600 (+10.0 [+5.0, +15.0], p 0.001) | kept (confirm 30/10, p 0.01) |" in md
    assert "| rte s0 deep | 0.600 | 0.500 | 0.400 (-10.0 [-15.0, -5.0], p 0.01) | refused: not confirmed" in md
    assert "| significant test gain | 1 | 1 | 0 |" in md and "| significant test loss | 1 | 0 | 1 |" in md


def test_test_breakdown_separates_a_label_shift_from_learning(tmp_path):
    # the "edit" turns an all-0 predictor into an all-1 predictor on a 3:1 task: accuracy 0.25 -> 0.75
    rows = [{"label": y, "pred": 1, "correct": y == 1, "pred_before": 0, "correct_before": y == 0}
            for y in (1, 1, 1, 0) * 5]
    (tmp_path / "test_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = icl.test_breakdown(tmp_path)
    assert d["majority_share"] == 0.75  # the constant predictor scores what the edit reached
    assert d["pred_share_before"] == {"0": 1.0} and d["pred_share_after"] == {"1": 1.0}
    assert (d["gained"], d["lost"]) == (15, 5)


def _icl_row(task, part, seed=0, before=0.5, after=0.6):
    return {"unit": f"m/{task}/k5-s{seed}/{part}", "model": icl.MODELS[0], "task": task, "seed": seed, "shots": 5,
            "part": part, "validation": {"before": 0.5, "after": 0.55, "n": 100},
            "test": {"before": before, "after": after, "n": 200}, "chosen": [],
            "candidates": [{"layer": 29, "module": "mlp", "rate": 0.5, "val_accuracy": 0.55}],
            "test_detail": {"n": 200, "majority_share": 0.6, "pred_share_before": {"0": 0.5, "1": 0.5},
                            "pred_share_after": {"0": 0.4, "1": 0.6}, "gained": 30, "lost": 10,
                            "sign_test_p": 0.0022}}


def test_icl_resume_skips_finished_units_and_keeps_the_priority_order():
    models, tasks, seeds, parts = list(icl.MODELS), list(icl.TASKS), [0, 1, 2], list(icl.PARTS)
    everything = icl.units(models, tasks, seeds, parts)
    assert len(everything) == len(set(everything))  # no unit twice
    assert len(everything) == len(models) * len(tasks) * len(seeds) * len(parts) + 2 * len(icl.FEW_SHOT_TASKS)
    cheap_first = [u for u in everything if u[0] == models[0] and u[2] == 0][:2 * len(tasks)]
    assert {u[4] for u in cheap_first} == {"deep", "paper"}  # deep and paper on every task before any shallow
    done = {icl.key(u) for u in everything[:5]}
    todo = [u for u in everything if icl.key(u) not in done]
    assert todo[0] == everything[5]


def test_icl_summary_is_built_from_the_rows_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(icl, "DOCS", tmp_path)
    md = icl.summarize([_icl_row("sst2", "deep"), _icl_row("sst2", "paper", after=0.5),
                        _icl_row("rte", "shallow", before=0.6, after=0.55)])
    assert "| sst2 | 0 | 0.500 | 0.500 | 0.600 | - |" in md
    assert "| deep | 1 | 1 | 0 | 0 | +0.100 |" in md
    assert "| sst2 s0 deep | 0.500 -> 0.600 | 0.600 | 0.50 -> 0.60 | 30 / 10 | 0.0022 |" in md
    assert (tmp_path / f"icl_heatmap_{icl.MODELS[0]}.png").is_file()


def _ft_row(config, lr, seed=0, task="sst2", score=0.8):
    return {"run": ft.run_key("minilm", task, config, lr, seed), "model": "minilm", "task": task, "config": config,
            "lr": lr, "seed": seed, "score": score, "metric": "accuracy",
            "curve": [{"step": 50, "score": score - 0.1}, {"step": 600, "score": score}],
            "trainable_params": 10, "artifact_bytes": 1000, "peak_rss_mb": 900.0, "step_time_s_median": 0.5}


def test_finetune_plan_selects_lrs_first_then_resumes_the_grid():
    grid = {"lora": [5e-4, 2e-3], "full": [1e-4, 5e-4], "full_ft": [5e-5, 2e-4]}
    first = ft.plan(["minilm"], ["sst2"], [0], grid, [], fair=False)
    assert [u[2] for u in first[:4]] == ["lora/qv_l1"] * 2 + ["full/qv_l1"] * 2  # the lr selections
    rows = [_ft_row("lora/qv_l1", 5e-4, score=0.84), _ft_row("lora/qv_l1", 2e-3, score=0.87),
            _ft_row("full/qv_l1", 1e-4), _ft_row("full/qv_l1", 5e-4)]
    todo = ft.plan(["minilm"], ["sst2"], [0], grid, rows, fair=False)
    assert todo[0] == ("minilm", "sst2", "lora/qkv_l1", 2e-3, 0)  # LoRA grid at the chosen lr, qv_l1 already done
    seeds = ft.plan(["minilm"], ["sst2", "rte"], [0, 1], grid, rows, fair=False)
    assert [u[4] for u in seeds if u[1] == "sst2" and u[2].startswith("lora/")] == [0] * 6 + [1] * 7
    assert seeds.index(("minilm", "rte", "lora/qv_l1", 2e-3, 0)) > seeds.index(("minilm", "sst2", "lora/qv_l8", 2e-3, 1))
    assert all(u[3] == 2e-3 for u in todo if u[2].startswith("lora/"))
    rows.append(_ft_row(todo[0][2], 2e-3))
    assert ft.plan(["minilm"], ["sst2"], [0], grid, rows, fair=False)[0] == todo[1]


def test_fair_lambda_protocol_gives_each_lambda_its_own_lr_then_seeds():
    grid = {"lora": [5e-4, 2e-3], "full": [1e-4, 5e-4], "full_ft": [5e-5, 2e-4]}
    first = ft.plan(["minilm"], ["sst2"], [0, 1, 2], grid, [])
    assert first[0] == ("minilm", "sst2", "lora/qv_l8", min(ft.FAIR_LRS), 0)  # large lambda, small lr first
    assert len({(u[2], u[3]) for u in first[:4 * len(ft.FAIR_LRS)]}) == 4 * len(ft.FAIR_LRS)
    scores = {"qv_l1": {2e-3: 0.87}, "qv_l2": {1e-3: 0.88}, "qv_l4": {5e-4: 0.875}, "qv_l8": {2.5e-4: 0.86}}
    rows = [_ft_row(f"lora/{c}", lr, score=scores[c].get(lr, 0.7)) for c in ft.LAMBDAS for lr in ft.FAIR_LRS]
    assert ft.fair_best(rows) == {"qv_l1": 2e-3, "qv_l2": 1e-3, "qv_l4": 5e-4, "qv_l8": 2.5e-4}
    todo = ft.fair_plan([0, 1, 2], rows)
    seeds = [u for u in todo if u[4] != 0]
    assert ("minilm", "sst2", "lora/qv_l2", 1e-3, 1) in seeds and ("minilm", "sst2", "lora/qv_l8", 2.5e-4, 2) in seeds
    full = [u for u in todo if u[2].startswith("full/")]
    assert {u[2] for u in full} == {"full/qv_l1", "full/qv_l2"}  # lambda 1 vs the best lambda (2 here)
    md = ft.fair_summary(rows)
    assert "| 2 | 70.00 | 70.00 | 70.00 | 88.00 | 70.00 | 0.001 |" in md


def test_finetune_summary_quotes_the_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(ft, "DOCS", tmp_path)
    grid = {"lora": [5e-4, 2e-3], "full": [1e-4, 5e-4], "full_ft": [5e-5, 2e-4]}
    rows = [_ft_row("lora/qv_l1", 5e-4, score=0.84), _ft_row("lora/qv_l1", 2e-3, score=0.87),
            _ft_row("lora/qv_l4", 2e-3, score=0.86)]
    md = ft.summarize(rows, grid)
    assert "'lora': 0.002" in md and "| lora/qv_l4 | 1 | 86.00 |" in md


def test_replace_block_updates_only_between_the_markers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("intro\n<!-- BEGIN t -->\nold\n<!-- END t -->\nverdict\n")
    assert replace_block(page, "t", "new table\n")
    assert page.read_text() == "intro\n<!-- BEGIN t -->\nnew table\n<!-- END t -->\nverdict\n"
    assert not replace_block(page, "other", "x")
