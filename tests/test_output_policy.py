"""The output-folder policy and machine faults (issue 21, items 1 and 4).

Never overwrite what is not ours: an output is never the input (or inside it, or around it); a folder
holding files leantune did not write is refused unless --overwrite; a rerun removes exactly what its own
manifest lists. A result appears whole or not at all: a full or read-only disk, or SIGTERM, leaves neither
a half-written folder nor a temporary one. Faults are injected (OSError, os.kill): no root, no tmpfs.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch
import transformers as tf

from ft_helpers import model_dir, sentences, write_csv
from leantune.cli import main
from leantune.models import gpt2_tokenizer_offline
from leantune.outputs import MANIFEST, STAGE_MARK, read_manifest
from tiny import TINY_CONFIGS

TOK = gpt2_tokenizer_offline()


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    from leantune.finetune.adapters import attach
    from leantune.finetune.artifacts import save_adapter
    from leantune.models import load_model
    from leantune.svd.edits import Edit, edit_record

    root = tmp_path_factory.mktemp("policy")
    cfg = TINY_CONFIGS["gpt2"]()
    cfg.vocab_size, cfg.n_positions = 50257, 1024
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(cfg).save_pretrained(root / "gpt2")
    TOK.save_pretrained(root / "gpt2")
    lm = load_model(str(root / "gpt2"), head="causal-lm")
    (root / "edit.json").write_text(json.dumps(edit_record(lm, str(root / "gpt2"), [Edit(1, "mlp", 0.5)], "float32")))
    bert = model_dir(root, "bert")
    model = load_model(str(bert), head="seq-cls", num_labels=2, dtype="float32")
    save_adapter(attach(model, "qv", "lora", 2, 4.0, 0.0), root / "adapter",
                 {"base_model": str(bert), "head": "seq-cls", "num_labels": 2, "labels": ["neg", "pos"],
                  "pad_token_id": 0})
    train = write_csv(root / "train.csv", sentences(32, seed=1))
    return {"gpt2": root / "gpt2", "edit": root / "edit.json", "bert": bert, "adapter": root / "adapter",
            "train": train}


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def copy_model(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def run(argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def one_error(code: int, err: str, *words: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("leantune: error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def no_leftovers(parent: Path) -> None:
    """No temporary result beside (or inside) an output."""
    assert not [p for p in parent.rglob("*") if STAGE_MARK in p.name], list(parent.rglob("*"))


def apply_argv(fx, model, out, *extra):
    return ["icl", "apply", "--model", model, "--edit", fx["edit"], "--out", out, *extra]


# --- an output is never an input -------------------------------------------------------------------------------
@pytest.mark.parametrize("where, words", [(".", "is the model"), ("sub", "is inside the model"),
                                          ("..", "contains the model")])
def test_icl_apply_never_writes_over_its_input_model(fx, tmp_path, capsys, where, words):
    model = copy_model(fx["gpt2"], tmp_path / "ws" / "model")
    before = snapshot(tmp_path)
    code, err = run(apply_argv(fx, model, model / where), capsys)
    one_error(code, err, words, "--out")
    assert snapshot(tmp_path) == before


def test_overwrite_never_allows_the_input_model(fx, tmp_path, capsys):
    model = copy_model(fx["gpt2"], tmp_path / "model")
    before = snapshot(tmp_path)
    code, err = run(apply_argv(fx, model, model, "--overwrite"), capsys)
    one_error(code, err, "is the model")
    assert snapshot(tmp_path) == before


def test_merge_never_writes_into_the_base_model(fx, tmp_path, capsys):
    base = json.loads((fx["adapter"] / "leantune_adapter.json").read_text())["base_model"]
    before = snapshot(Path(base))
    code, err = run(["merge", "--adapter", fx["adapter"], "--out", base], capsys)
    one_error(code, err, "is the base model")
    assert snapshot(Path(base)) == before


def test_icl_eval_never_writes_into_its_edit_folder(fx, tmp_path, capsys):
    edits = tmp_path / "search"
    edits.mkdir()
    (edits / "edit.json").write_text(fx["edit"].read_text())
    before = snapshot(tmp_path)
    code, err = run(["icl", "eval", "--model", fx["gpt2"], "--task", "sst2", "--shots", "1", "--n-eval", "4",
                     "--edit", edits / "edit.json", "--out", edits, "--quiet"], capsys)
    one_error(code, err, "contains the edit file")
    assert snapshot(tmp_path) == before


# --- a folder of other files is refused, unless --overwrite ------------------------------------------------------
@pytest.mark.parametrize("command", ["apply", "merge", "lab"])
def test_a_folder_holding_another_model_is_refused(fx, tmp_path, capsys, command):
    other = copy_model(fx["gpt2"], tmp_path / "other-model")
    argv = {"apply": apply_argv(fx, fx["gpt2"], other),
            "merge": ["merge", "--adapter", fx["adapter"], "--out", other],
            "lab": ["lab", "train", "--steps", "1", "--out", other, "--quiet"]}[command]
    before = snapshot(tmp_path)
    code, err = run(argv, capsys)
    one_error(code, err, "holds files leantune did not write", "--overwrite")
    assert snapshot(tmp_path) == before


def test_overwrite_writes_beside_a_users_files_and_a_rerun_removes_only_its_own(fx, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    code, err = run(apply_argv(fx, fx["gpt2"], out, "--overwrite"), capsys)
    assert code == 0, err
    listed = read_manifest(out)["files"]
    assert "model.safetensors" in listed and "notes.md" not in listed
    code, err = run(apply_argv(fx, fx["gpt2"], out), capsys)  # without --overwrite: notes.md is not ours
    one_error(code, err, "(notes.md)")
    (out / "notes.md").unlink()
    code, err = run(apply_argv(fx, fx["gpt2"], out, "--factorize"), capsys)  # our own folder: no option needed
    assert code == 0, err
    assert (out / "leantune_factorized.json").is_file()
    assert sorted(read_manifest(out)["files"]) == sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    no_leftovers(tmp_path)


def test_another_commands_output_is_refused(fx, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(apply_argv(fx, fx["gpt2"], out), capsys)[0] == 0
    before = snapshot(tmp_path)
    code, err = run(["merge", "--adapter", fx["adapter"], "--out", out], capsys)
    one_error(code, err, "holds the output of `leantune icl apply`")
    assert snapshot(tmp_path) == before


def ft_argv(fx, out, *extra):
    return ["finetune", "--model", fx["bert"], "--train-file", fx["train"], "--text-columns", "text",
            "--max-length", "16", "--batch-size", "8", "--max-steps", "2", "--quiet", "--out", out, *extra]


def test_finetune_full_after_lora_leaves_no_stale_peft_adapter(fx, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run(ft_argv(fx, out), capsys)
    assert code == 0, err
    assert (out / "peft_adapter").is_dir()
    code, err = run(ft_argv(fx, out, "--method", "full"), capsys)
    assert code == 0, err
    assert not (out / "peft_adapter").exists()  # PEFT would otherwise load the old LoRA run
    assert json.loads((out / "adapter" / "leantune_adapter.json").read_text())["method"] == "full"
    assert json.loads((out / "metrics.json").read_text())["adapter_dir"] == str(out / "adapter")
    no_leftovers(tmp_path)


# --- a result whole or not at all ------------------------------------------------------------------------------
def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "model.safetensors")


def test_full_disk_during_icl_apply_leaves_no_folder(fx, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tf.PreTrainedModel, "save_pretrained", enospc)
    out = tmp_path / "edited"
    code, err = run(apply_argv(fx, fx["gpt2"], out), capsys)
    one_error(code, err, "No space left on device", str(out))
    assert sorted(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling


def test_full_disk_during_a_rerun_keeps_the_previous_result(fx, tmp_path, capsys, monkeypatch):
    out = tmp_path / "edited"
    assert run(apply_argv(fx, fx["gpt2"], out), capsys)[0] == 0
    before = snapshot(tmp_path)
    monkeypatch.setattr(tf.PreTrainedModel, "save_pretrained", enospc)
    one_error(*run(apply_argv(fx, fx["gpt2"], out), capsys), "No space left on device")
    assert snapshot(tmp_path) == before


def test_full_disk_during_icl_eval_writes_neither_file(fx, tmp_path, capsys, monkeypatch):
    import leantune.runinfo as runinfo

    real = runinfo.write_jsonl

    def full(path, rows):
        real(path, rows)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(runinfo, "write_jsonl", full)
    out = tmp_path / "eval"
    code, err = run(["icl", "eval", "--model", fx["gpt2"], "--task", "sst2", "--shots", "1", "--n-eval", "4",
                     "--out", out, "--quiet"], capsys)
    one_error(code, err, "No space left on device")
    assert sorted(tmp_path.iterdir()) == []  # no metrics.json without predictions, no .tmp


def test_full_disk_while_journaling_a_search_is_one_line(fx, tmp_path, capsys, monkeypatch):
    from leantune.svd.journal import Journal

    def full(self, rec):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(Journal, "append", full)
    code, err = run(["icl", "search", "--model", fx["gpt2"], "--task", "sst2", "--strategy", "grid", "--layers", "1",
                     "--rates", "0,0.5", "--shots", "1", "--n-val", "4", "--n-test", "4", "--quiet",
                     "--out", tmp_path / "s"], capsys)
    one_error(code, err, "No space left on device", "candidates.jsonl")


def test_finetune_that_cannot_save_stops_before_training(fx, tmp_path, capsys, monkeypatch):
    import leantune.outputs as outputs
    import leantune.recipes.finetune as ft

    def read_only(fd):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "probe")

    trained = []
    monkeypatch.setattr(outputs.os, "fsync", read_only)  # the write probe of the output folder
    monkeypatch.setattr(ft, "_train", lambda *a, **k: trained.append(1))
    code, err = run(ft_argv(fx, tmp_path / "run"), capsys)
    one_error(code, err, "Read-only file system", str(tmp_path / "run"))
    assert trained == [] and sorted(tmp_path.iterdir()) == []


def sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_icl_apply_leaves_nothing(fx, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tf.PreTrainedModel, "save_pretrained", sigterm)
    code = main([str(a) for a in apply_argv(fx, fx["gpt2"], tmp_path / "edited")])
    assert code == 128 + signal.SIGTERM
    assert "terminated" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # main restores the handler it replaced


def test_sigterm_during_finetune_leaves_no_folder_and_no_temporary_one(fx, tmp_path, capsys, monkeypatch):
    import tempfile

    from transformers import Trainer

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # the Trainer's temporary output_dir goes here
    monkeypatch.setattr(Trainer, "train", sigterm)
    code = main([str(a) for a in ft_argv(fx, tmp_path / "run")])
    assert code == 128 + signal.SIGTERM, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"] and list(tmp.iterdir()) == []


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_run(fx, tmp_path, capsys):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".edited{STAGE_MARK}{int(dead.stdout)}"  # what SIGKILL leaves: its pid is gone
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    assert run(apply_argv(fx, fx["gpt2"], tmp_path / "edited"), capsys)[0] == 0
    assert not stale.exists()
    no_leftovers(tmp_path)


def test_device_map_offload_folder_is_removed_with_the_model(fx, tmp_path, monkeypatch):
    import gc
    import tempfile

    from leantune.models import load_model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lm = load_model(str(fx["gpt2"]), head="causal-lm", device_map={"transformer.wte": "cpu", "transformer.wpe": "cpu",
                                                                    "transformer.h.0": "cpu", "transformer.h.1": "disk",
                                                                    "transformer.ln_f": "cpu", "lm_head": "cpu"})
    assert [p.name.startswith("leantune-offload-") for p in tmp_path.iterdir()] == [True]
    del lm
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_an_alias_does_not_hide_its_folder(fx, capsys):
    from leantune.aliases import ALIASES

    where = ALIASES["lab-icl"].locate()  # the packaged checkpoint
    before = snapshot(where)
    code, err = run(apply_argv(fx, "lab-icl", where), capsys)
    one_error(code, err, "is the model")
    assert snapshot(where) == before


def test_a_search_folder_from_before_manifests_still_resumes(fx, tmp_path, capsys):
    argv = ["icl", "search", "--model", fx["gpt2"], "--task", "sst2", "--strategy", "grid", "--layers", "1",
            "--rates", "0,0.5", "--shots", "1", "--n-val", "4", "--n-test", "4", "--quiet", "--out"]
    old = tmp_path / "old"
    assert run(argv + [old], capsys)[0] == 0
    (old / MANIFEST).unlink()  # as an earlier leantune left it
    (old / "summary.json").unlink()
    code, err = run(argv + [old], capsys)
    assert code == 0, err
    assert (old / "summary.json").is_file() and "summary.json" in read_manifest(old)["files"]
    (old / MANIFEST).unlink()
    (old / "notes.md").write_text("a user's file: not a search folder's")
    one_error(*run(argv + [old], capsys), "holds files leantune did not write")
