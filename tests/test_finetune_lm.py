"""`finetune --objective lm` (prompt = the task's ICL template, answer = the label word, loss on the answer
only) on a tiny Llama GGUF, then `merge --out-gguf`: only the merged Q and V tensors are rewritten."""

import json

import gguf
import pytest
import torch

from gguf_writer import tiny_llama, write_gguf
from leantune.cli import main
from leantune.finetune.objectives.lm import IGNORE, PromptAnswer, pad_prompt_answer, prompt_answer_ids
from leantune.icl.tokenize import encode
from leantune.models import gpt2_tokenizer_offline, load_model, load_tokenizer
from leantune.tasks import load_task_file

IDS = torch.tensor([[3, 5, 7, 11, 13, 2, 40, 60]])


def _task(tmp):
    rows = [{"text": f"item {i}", "y": ["neg", "pos"][i % 2]} for i in range(24)]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "mine", "data": {"train": "train.jsonl", "validation": "train.jsonl"}, "label_field": "y",
            "labels": ["neg", "pos"], "text_fields": ["text"], "template": "R: {text}\nS:", "label_words": ["bad", "good"]}
    (tmp / "task.json").write_text(json.dumps(spec))
    return tmp / "task.json"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    mp = pytest.MonkeyPatch()
    mp.setenv("LEANTUNE_CACHE", str(tmp / "cache"))
    task = _task(tmp)
    src = write_gguf(tiny_llama(), tmp / "tiny.gguf", quant="Q8_0")
    assert main(["finetune", "--objective", "lm", "--model", str(src), "--task", str(task), "--max-steps", "6",
                 "--max-eval-samples", "8", "--batch-size", "4", "--lr", "1e-2", "--v-lr-ratio", "2",
                 "--icl-shots", "1", "--max-length", "64", "--log-every", "1", "--out", str(tmp / "ft"), "--quiet"]) == 0
    yield tmp, src, task, json.loads((tmp / "ft" / "metrics.json").read_text())
    mp.undo()


def test_the_answer_is_tokenized_as_the_icl_scorer_scores_it():
    tok = gpt2_tokenizer_offline()
    for prompt, answer in [("text: fine film\n sentiment :", " positive"), ("Q: x ", "Yes"), ("a\n", " b c")]:
        assert prompt_answer_ids(tok, prompt, answer) == encode(tok, prompt, answer)


def test_loss_is_on_the_answer_tokens_only(tmp_path):
    tok = gpt2_tokenizer_offline()
    task = load_task_file(str(_task(tmp_path)))
    records = [{"text": "item 1", "label": 1, "idx": 0}, {"text": "a longer item 22", "label": 0, "idx": 1}]
    batch = pad_prompt_answer(tok)(list(PromptAnswer(records, tok, task, 64)))
    for i, r in enumerate(records):
        ctx, ans = encode(tok, task.render_context(r), task.continuations(r)[r["label"]])
        row = batch["labels"][i].tolist()
        assert row[:len(ctx)] == [IGNORE] * len(ctx) and row[len(ctx):len(ctx) + len(ans)] == ans
        assert set(row[len(ctx) + len(ans):]) <= {IGNORE}  # padding
        assert batch["attention_mask"][i].sum() == len(ctx) + len(ans)


def test_lm_run_trains_qv_with_the_lr_split_and_reports_the_icl_scorer(run, capsys):
    tmp, _, task, m = run
    assert m["objective"] == "lm" and set(m["icl"]) == {"before", "after"} and set(m["icl"]["after"]) == {"0", "1"}
    groups = {g["name"]: g for g in m["optimizer_groups"]}
    assert groups["v.lora_A"]["lr"] == 2 * groups["q.lora_A"]["lr"] == 0.02
    assert not any(g.startswith("head") for g in groups)  # no task head: the LM's own output scores the words
    losses = [h["loss"] for h in m["history"]["train"]]
    assert losses[-1] < losses[0]
    meta = json.loads((tmp / "ft" / "adapter" / "leantune_adapter.json").read_text())
    assert meta["head"] == "causal-lm" and meta["objective"] == "lm"
    # the numbers are those `icl eval` gives on the merged model
    assert main(["merge", "--adapter", str(tmp / "ft" / "adapter"), "--out", str(tmp / "merged")]) == 0
    assert main(["icl", "eval", "--model", str(tmp / "merged"), "--tokenizer", str(tmp / "tiny.gguf"), "--task",
                 str(task), "--shots", "0", "--n-eval", "8", "--quiet", "--out", str(tmp / "ev")]) == 0
    assert json.loads((tmp / "ev" / "metrics.json").read_text())["accuracy"] == m["icl"]["after"]["0"]["accuracy"]


def test_merge_out_gguf_rewrites_only_q_and_v_and_reloads_as_the_merged_model(run, capsys):
    tmp, src, _, _ = run
    out = tmp / "merged.gguf"
    assert main(["merge", "--adapter", str(tmp / "ft" / "adapter"), "--out", str(tmp / "merged2"),
                 "--out-gguf", str(out), "--gguf-type", "f32"]) == 0
    assert "4 tensor(s) rewritten as F32" in capsys.readouterr().out
    old = {t.name: t for t in gguf.GGUFReader(str(src)).tensors}
    new = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    rewritten = {f"blk.{i}.attn_{m}.weight" for i in range(2) for m in "qv"}
    assert {n for n in old if bytes(old[n].data) != bytes(new[n].data)} == rewritten
    assert gguf.GGUFReader(str(out)).fields["leantune.edit.kind"].contents() == "merge"
    with torch.no_grad():
        want = load_model(str(tmp / "merged2"), head="causal-lm")(IDS).logits
        got = load_model(str(out), head="causal-lm")(IDS).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_merge_out_gguf_refuses_a_classification_adapter(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEANTUNE_CACHE", str(tmp_path / "cache"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter.safetensors").write_bytes(b"")
    (adapter / "leantune_adapter.json").write_text(json.dumps(
        {"format": "leantune-adapter/1", "base_model": "x", "method": "lora", "targets": "qv", "rank": 2,
         "alpha": 4, "dropout": 0.0, "num_labels": 2, "head": "seq-cls"}))
    assert main(["merge", "--adapter", str(adapter), "--out-gguf", str(tmp_path / "m.gguf")]) == 2
    err = capsys.readouterr().err
    assert err.count("leantune: error:") == 1 and "--objective lm" in err
