"""Guards of long runs (issue 10, items 17, 19-22): the search journal after a torn write, one search per
folder (a lock that SIGKILL releases), the stop on non-finite training numbers, a quiet --quiet, a
truncation length that fits the model, and the plot path that is printed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ft_helpers import model_dir, sentences, write_csv
from leantune.cli import main
from leantune.errors import LeantuneError
from leantune.outputs import MANIFEST
from leantune.svd.runlock import PID_FILE
from leantune.models import gpt2_tokenizer_offline
from leantune.svd.journal import Journal
from leantune.recipes.icl_search import icl_search
from leantune.svd.runlock import search_lock
from tiny import save_tiny_lm

TOK = gpt2_tokenizer_offline()
SMALL = dict(task="sst2", strategy="grid", layers="1", rates="0,0.5,0.9", shots=1, n_val=12, n_test=8, seed=1,
             progress=False)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2")
    return save_tiny_lm(d, "gpt2", layers=2, tokenizer=TOK)


def _keys(journal):
    return [json.loads(line)["key"] for line in journal.read_text().splitlines()]  # every line must parse


def test_append_after_a_torn_last_line_starts_a_new_line(tmp_path):
    j = Journal(tmp_path)
    j.append({"key": "a", "val_accuracy": 0.5})
    with open(j.path, "a") as f:
        f.write('{"key": "b", "val_acc')  # the process was killed mid-write
    assert set(Journal(tmp_path).read_all()) == {"a"}  # the fragment is ignored: "b" will be redone
    Journal(tmp_path).append({"key": "b", "val_accuracy": 0.75})
    assert _keys(j.path) == ["a", "b"]
    assert Journal(tmp_path).read_all()["b"]["val_accuracy"] == 0.75


def test_resume_after_a_torn_last_line_loses_nothing(gpt2, tmp_path):
    clean = icl_search(str(gpt2), out=str(tmp_path / "clean"), **SMALL)
    torn = tmp_path / "torn"
    torn.mkdir()
    lines = (tmp_path / "clean" / "candidates.jsonl").read_text().splitlines()
    assert len(lines) == 5  # baseline + 2 modules x 2 rates
    (torn / "run.json").write_text((tmp_path / "clean" / "run.json").read_text())
    (torn / MANIFEST).write_text((tmp_path / "clean" / MANIFEST).read_text())  # listed when the search began
    # two finished candidates, the third cut half-way through its line
    (torn / "candidates.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])

    resumed = icl_search(str(gpt2), out=str(torn), **SMALL)

    assert resumed["candidates"]["evaluated_this_run"] == 3  # the torn one and the two never started
    keys = _keys(torn / "candidates.jsonl")
    assert len(keys) == len(set(keys)) == 5
    assert resumed["chosen_edits"] == clean["chosen_edits"] and resumed["validation"] == clean["validation"]
    # a rerun finds every record (none was glued to a fragment and lost): nothing to redo
    assert icl_search(str(gpt2), out=str(torn), **SMALL)["candidates"]["evaluated_this_run"] == 0


def test_second_search_on_the_same_folder_is_refused_and_sigkill_frees_it(gpt2, tmp_path, capsys):
    args = ["icl", "search", "--model", str(gpt2), "--task", "sst2", "--strategy", "grid", "--layers", "0-1",
            "--shots", "1", "--n-val", "100", "--n-test", "8", "--seed", "1", "--quiet", "--out", str(tmp_path)]
    first = subprocess.Popen([sys.executable, "-m", "leantune", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    journal = tmp_path / "candidates.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not journal.exists():  # the first search holds the lock and is working
        time.sleep(0.05)
    try:
        assert first.poll() is None, "the first search must still be running"
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("leantune: error:") == 1 and f"another search (pid {first.pid}) is running" in err
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert not (tmp_path / "summary.json").exists()
    keys = _keys(journal)
    assert len(keys) == len(set(keys))  # the refused search appended nothing
    # the kernel released the killed holder's lock: no stale lock (resuming after SIGKILL is
    # test_svd_search.py::test_resume_after_sigkill_skips_finished_and_ends_the_same)
    with search_lock(tmp_path):
        assert (tmp_path / PID_FILE).read_text().strip() == str(os.getpid())
    assert not (tmp_path / PID_FILE).exists()


def test_wait_lock_waits_for_the_holder(gpt2, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom leantune.svd.runlock import search_lock\n"
        f"with search_lock({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(2)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    cli = ["icl", "search", "--model", str(gpt2), "--task", "sst2", "--strategy", "grid", "--layers", "1",
           "--rates", "0,0.5", "--shots", "1", "--n-val", "8", "--n-test", "8", "--quiet", "--out", str(tmp_path)]
    assert main(cli + ["--wait-lock"]) == 0
    assert holder.poll() == 0  # it ran only once the holder had finished
    assert (tmp_path / "summary.json").is_file()


def test_non_finite_grad_norm_or_eval_loss_stops_training():
    from leantune.finetune.trainer import trainer_classes

    guard = trainer_classes()[2]()
    state = type("State", (), {"global_step": 7})()
    guard.on_log(None, state, None, logs={"loss": 0.7, "grad_norm": 1.5})  # finite: nothing happens
    for key in ("grad_norm", "eval_loss", "loss"):
        with pytest.raises(LeantuneError, match=f"the {key.replace('_', ' ')} became (inf|nan) at step 7"):
            guard.on_log(None, state, None, logs={key: float("inf") if key != "loss" else float("nan")})


def test_quiet_finetune_prints_no_trainer_log_dicts_and_truncates_at_the_models_positions(tmp_path, capsys):
    mdir = model_dir(tmp_path, "bert")  # 64 positions
    rows = [{**r, "text": " ".join([r["text"]] * 20)} for r in sentences(24, seed=1)]  # ~120 words each
    train = write_csv(tmp_path / "train.csv", rows)
    assert main(["finetune", "--model", str(mdir), "--train-file", str(train), "--text-columns", "text",
                 "--max-steps", "2", "--log-every", "1", "--eval-every", "1", "--batch-size", "8", "--max-length",
                 "400", "--quiet", "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "{'loss'" not in out + err and "'eval_loss'" not in out + err and "train_runtime" not in out + err
    assert "eval accuracy" in out  # leantune's own summary still prints
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["config"]["max_length"] == 64  # texts past the position embedding are cut there, not crashed on


def test_plot_path_printed_is_the_file_written(gpt2, tmp_path, capsys):
    png = tmp_path / "cond.png"
    assert main(["inspect", str(gpt2), "--spectrum", "--plot", str(png), "--quiet"]) == 0
    assert f"plot: {png}" in capsys.readouterr().out and png.read_bytes()[:4] == b"\x89PNG"
