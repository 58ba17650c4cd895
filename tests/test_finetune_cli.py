"""`leantune finetune` / `leantune merge` end to end on a tiny model, and the errors a user can fix."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ft_helpers import model_dir, sentences, write_csv
from leantune.cli import main
from leantune.finetune.config import build_config
from leantune.errors import LeantuneError


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny LoRA(QV) run through the CLI, shared by the output tests."""
    tmp = tmp_path_factory.mktemp("ft")
    mdir = model_dir(tmp, "bert")
    train = write_csv(tmp / "train.csv", sentences(48, seed=1))
    evalf = write_csv(tmp / "eval.csv", sentences(16, seed=2))
    cfg = tmp / "cfg.yaml"
    cfg.write_text("method: lora\nrank: 4\nv_lr_ratio: 2\nbatch-size: 8\nlr: 0.01\n")
    out = tmp / "out"
    rc = main(["finetune", "--config", str(cfg), "--model", str(mdir), "--train-file", str(train), "--eval-file",
               str(evalf), "--text-columns", "text", "--label-column", "label", "--rank", "2", "--max-steps", "6",
               "--max-length", "16", "--seed", "3", "--dropout", "0", "--eval-every", "3", "--quiet",
               "--out", str(out)])
    assert rc == 0
    return mdir, out


def test_finetune_writes_metrics_adapter_curves(tiny_run, capsys):
    mdir, out = tiny_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["rank"] == 2  # CLI flag beats the config file
    assert m["config"]["v_lr_ratio"] == 2 and m["config"]["batch_size"] == 8  # the file beats defaults
    assert m["seed"] == 3 and m["train"]["steps"] == 6
    assert m["train"]["step_time_s_median"] > 0 and m["train"]["peak_rss_mb"] > 0
    assert set(m["eval"]) >= {"accuracy", "score", "loss"} and m["eval"]["metric"] == "accuracy"
    assert [h["step"] for h in m["history"]["eval"]] == [3, 6]  # periodic; the final one reused
    assert m["history"]["train"] and all("loss" in h for h in m["history"]["train"])
    assert {"torch", "transformers", "peft"} <= set(m["versions"])
    groups = {g["name"]: g for g in m["optimizer_groups"]}
    assert groups["v.lora_A"]["lr"] == 2 * groups["q.lora_A"]["lr"] == 0.02
    # the adapter holds exactly the trained tensors: LoRA A/B of q and v in each layer, and the head
    tensors = load_file(str(out / "adapter" / "adapter.safetensors"))
    expected = {f"layers.{i}.{p}.lora_{ab}" for i in range(2) for p in "qv" for ab in "AB"}
    assert set(tensors) == expected | {"head.classifier.weight", "head.classifier.bias"}
    assert m["trainable_params"] == sum(t.numel() for t in tensors.values())
    assert m["artifact_bytes"] == sum(f.stat().st_size for f in (out / "adapter").iterdir())
    meta = json.loads((out / "adapter" / "leantune_adapter.json").read_text())
    assert (meta["base_model"], meta["targets"], meta["method"], meta["v_lr_ratio"]) == (str(mdir), "qv", "lora", 2)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "peft_adapter" / "adapter_config.json").is_file()


def test_merge_cli_writes_a_dense_model_with_the_adapters_predictions(tiny_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from leantune.finetune.artifacts import load_adapter

    _, out = tiny_run
    assert main(["merge", "--adapter", str(out / "adapter"), "--out", str(tmp_path / "merged")]) == 0
    merged = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "merged")).eval()
    adapter_model, _, _ = load_adapter(out / "adapter")
    x = torch.randint(5, 37, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=x).logits, adapter_model(input_ids=x).logits)
    assert (tmp_path / "merged" / "model.safetensors").is_file() and (tmp_path / "merged" / "tokenizer.json").is_file()
    assert merged.config.id2label == {0: "neg", 1: "pos"}


def _one_line_error(capsys, argv):
    rc = main(argv)
    # model loading may draw progress bars on stderr first; the error itself is the one last line
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and err.startswith("leantune: error: "), err
    return err


def test_bad_task_name_is_one_line(capsys, tmp_path):
    err = _one_line_error(capsys, ["finetune", "--task", "sst3", "--out", str(tmp_path)])
    assert "unknown task 'sst3'" in err


def test_missing_column_is_one_line(capsys, tmp_path):
    train = write_csv(tmp_path / "t.csv", sentences(8))
    err = _one_line_error(capsys, ["finetune", "--train-file", str(train), "--text-columns", "review",
                                   "--out", str(tmp_path / "o")])
    assert "no column 'review'" in err and "text, label" in err


def test_unseen_label_value_is_one_line(capsys, tmp_path):
    train = write_csv(tmp_path / "t.csv", sentences(8))
    evalf = write_csv(tmp_path / "e.csv", sentences(8, labels=("neg", "positive")))
    err = _one_line_error(capsys, ["finetune", "--train-file", str(train), "--eval-file", str(evalf),
                                   "--text-columns", "text", "--out", str(tmp_path / "o")])
    assert "never seen" in err and "'positive'" in err


def test_non_finite_loss_stops_training(capsys, tmp_path):
    mdir = model_dir(tmp_path, "gpt2", poison_head=True)
    train = write_csv(tmp_path / "t.csv", sentences(16))
    err = _one_line_error(capsys, ["finetune", "--model", str(mdir), "--train-file", str(train), "--text-columns",
                                   "text", "--max-steps", "3", "--batch-size", "4", "--quiet",
                                   "--out", str(tmp_path / "o")])
    assert "loss became nan at step 1" in err and "lower the learning rates" in err


def test_config_file_rejects_unknown_keys_and_both_budgets(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"v_lr_ration": 4}))
    with pytest.raises(LeantuneError, match="unknown option.*v_lr_ration"):
        build_config(bad)
    with pytest.raises(LeantuneError, match="either --max-steps or --epochs"):
        build_config(None, max_steps=3, epochs=1.0)
    with pytest.raises(LeantuneError, match="targets 'all' is plain full fine-tuning"):
        build_config(None, targets="all", method="lora")
