"""Every user-fixable mistake is one line and exit 2, before any output is touched (issue 10).

One table: each case is a command line (with placeholders for tiny models and files built once per
module), an optional setup that writes the bad file, and the words the one error line must contain.
Each case runs in-process in its own folder, which holds a previous good result in ``prev/``; after the
command, that folder must be byte-for-byte as it was (no partial output, nothing overwritten).
Cases tagged ``#N`` reproduce item N of issue 10; the others held before and must keep holding.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers as tf

from ft_helpers import model_dir, sentences, write_csv
from leantune.cli import main
from leantune.models import gpt2_tokenizer_offline
from leantune.outputs import claim
from tiny import TINY_CONFIGS

TOK = gpt2_tokenizer_offline()
UNCREATABLE = "/proc/leantune-bad-inputs/out"  # /proc refuses new entries, even to root


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Tiny models and good files, built once: {name: path}."""
    from leantune.finetune.adapters import attach
    from leantune.finetune.artifacts import save_adapter
    from leantune.models import load_model
    from leantune.svd.edits import Edit, edit_record

    root = tmp_path_factory.mktemp("bad-inputs")
    cfg = TINY_CONFIGS["gpt2"]()
    cfg.vocab_size, cfg.n_positions = 50257, 1024
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(cfg).save_pretrained(root / "gpt2")
    TOK.save_pretrained(root / "gpt2")
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(TINY_CONFIGS["gpt2"]()).save_pretrained(root / "gpt2-96")  # 96 ids: GPT-2 BPE does not fit

    bert = model_dir(root, "bert")
    train = write_csv(root / "train.csv", sentences(32, seed=1))
    model = load_model(str(bert), head="seq-cls", num_labels=2, dtype="float32")
    adapted = attach(model, "qv", "lora", 2, 4.0, 0.0)
    save_adapter(adapted, root / "adapter", {"base_model": str(bert), "head": "seq-cls", "num_labels": 2,
                                              "labels": ["neg", "pos"], "pad_token_id": 0})

    lm = load_model(str(root / "gpt2"), head="causal-lm")
    edit = edit_record(lm, str(root / "gpt2"), [Edit(1, "mlp", 0.5)], "float32")
    (root / "edit.json").write_text(json.dumps(edit))
    return {"gpt2": root / "gpt2", "gpt2_96": root / "gpt2-96", "bert": bert, "train": train,
            "adapter": root / "adapter", "edit": root / "edit.json"}


# --- setups: write one bad file into the case's folder, return extra placeholders --------------------------
def _task(ws: Path, raw: bytes | None = None, lines: bytes | None = None, suffix: str = ".json", **over) -> dict:
    rows = [{"text": f"item {i}", "y": ["neg", "pos"][i % 2]} for i in range(12)]
    (ws / "train.jsonl").write_bytes(lines if lines is not None else
                                     "".join(json.dumps(r) + "\n" for r in rows).encode())
    spec = {"name": "mine", "data": {"train": "train.jsonl", "validation": "train.jsonl"}, "label_field": "y",
            "labels": ["neg", "pos"], "template": "Review: {text}\nSentiment:", "label_words": ["bad", "good"]}
    spec.update(over)
    (ws / f"task{suffix}").write_bytes(raw if raw is not None else json.dumps(spec).encode())
    return {"task": ws / f"task{suffix}"}


def _edit(ws: Path, fx: dict, change) -> dict:
    data = json.loads(fx["edit"].read_text())
    change(data)
    (ws / "edit.json").write_text(json.dumps(data))
    return {"bad_edit": ws / "edit.json"}


def _adapter(ws: Path, fx: dict, meta_change=None, tensors: bytes | None = None) -> dict:
    ad = ws / "adapter"
    shutil.copytree(fx["adapter"], ad)
    if meta_change:
        meta = json.loads((ad / "leantune_adapter.json").read_text())
        meta = meta_change(meta)
        (ad / "leantune_adapter.json").write_text(json.dumps(meta))
    if tensors is not None:
        (ad / "adapter.safetensors").write_bytes(tensors)
    return {"bad_adapter": ad}


def _weights(ws: Path, fx: dict, mutate) -> dict:
    d = ws / "model"
    shutil.copytree(fx["gpt2"], d)
    f = d / "model.safetensors"
    f.write_bytes(mutate(f.read_bytes()))
    return {"bad_model": d}


def _file(ws: Path, name: str, text: str | bytes = "not a folder") -> dict:
    (ws / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return {"file": ws / name}


def _data(ws: Path, text: str, name: str = "bad.csv") -> dict:
    (ws / name).write_text(text)
    return {"bad_train": ws / name}


def _config(ws: Path, fx: dict, change) -> dict:
    d = ws / "model"
    shutil.copytree(fx["gpt2"], d)
    cfg = json.loads((d / "config.json").read_text())
    change(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    return {"bad_model": d}


def _drop(key):
    def change(meta):
        meta.pop(key)
        return meta
    return change


def _set(path, value):
    """change(data): data[path[0]]...[path[-1]] = value"""
    def change(data):
        d = data
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        return data
    return change


ICL_EVAL = ["icl", "eval", "--model", "{gpt2}", "--task", "sst2", "--shots", "1", "--n-eval", "4", "--quiet"]
SEARCH = ["icl", "search", "--model", "{gpt2}", "--task", "sst2", "--shots", "1", "--n-val", "4", "--n-test", "4",
          "--quiet", "--out", "{prev}"]
APPLY = ["icl", "apply", "--model", "{gpt2}", "--out", "{prev}", "--edit"]
FT = ["finetune", "--model", "{bert}", "--train-file", "{train}", "--text-columns", "text", "--max-length", "16",
      "--batch-size", "8", "--quiet", "--out", "{prev}"]
FT_NO_OUT = FT[:-2]
FT_BAD = ["finetune", "--model", "{bert}", "--train-file", "{bad_train}", "--text-columns", "text", "--max-length",
          "16", "--batch-size", "8", "--quiet", "--max-steps", "1", "--out", "{prev}"]
_JSONL = "".join(f'{{"text": "good film {i}", "label": {i % 2}}}\n' for i in range(6))

# (id, argv, expected words in the one error line, setup(ws, fx) -> placeholders or None)
CASES = [
    # 1: damaged weights
    ("#1 truncated model.safetensors", ["inspect", "{bad_model}"], "cannot be read",
     lambda ws, fx: _weights(ws, fx, lambda b: b[: len(b) // 2])),
    ("#1 random bytes as model.safetensors", ["inspect", "{bad_model}"], "cannot be read",
     lambda ws, fx: _weights(ws, fx, lambda b: bytes((i * 97 + 13) % 256 for i in range(len(b))))),
    # 2: adapter directory
    ("#2 truncated adapter.safetensors", ["merge", "--adapter", "{bad_adapter}", "--out", "{prev}"],
     "adapter.safetensors cannot be read",
     lambda ws, fx: _adapter(ws, fx, tensors=(fx["adapter"] / "adapter.safetensors").read_bytes()[:100])),
    ("#2 manifest without rank", ["merge", "--adapter", "{bad_adapter}", "--out", "{prev}"],
     "missing the field 'rank'", lambda ws, fx: _adapter(ws, fx, _drop("rank"))),
    ("manifest rank is text", ["merge", "--adapter", "{bad_adapter}", "--out", "{prev}"],
     "field 'rank' must be an integer", lambda ws, fx: _adapter(ws, fx, _set(["rank"], "2"))),
    ("manifest is a list", ["merge", "--adapter", "{bad_adapter}", "--out", "{prev}"],
     "must be a mapping, got list", lambda ws, fx: _adapter(ws, fx, lambda m: [m])),
    ("not an adapter folder", ["merge", "--adapter", "{bert}", "--out", "{prev}"], "is not a leantune adapter", None),
    # 3: output locations, checked before any work
    ("#3 finetune --out is a file", FT_NO_OUT + ["--out", "{file}"], "is an existing file",
     lambda ws, fx: _file(ws, "notes.txt")),
    ("#3 finetune --out uncreatable", FT_NO_OUT + ["--out", UNCREATABLE], "cannot be created", None),
    ("#3 merge --out is a file", ["merge", "--adapter", "{adapter}", "--out", "{file}"], "is an existing file",
     lambda ws, fx: _file(ws, "notes.txt")),
    ("#3 merge --out uncreatable", ["merge", "--adapter", "{adapter}", "--out", UNCREATABLE], "cannot be created",
     None),
    ("#3 icl eval --out is a file", ICL_EVAL + ["--out", "{file}"], "is an existing file",
     lambda ws, fx: _file(ws, "notes.txt")),
    ("#3 icl eval --out uncreatable", ICL_EVAL + ["--out", UNCREATABLE], "cannot be created", None),
    ("#3 icl search --out is a file", SEARCH[:-1] + ["{file}"], "is an existing file",
     lambda ws, fx: _file(ws, "notes.txt")),
    ("#3 icl apply --out is a file", ["icl", "apply", "--model", "{gpt2}", "--edit", "{edit}", "--out", "{file}"],
     "is an existing file", lambda ws, fx: _file(ws, "notes.txt")),
    ("#3 inspect --json uncreatable", ["inspect", "{gpt2}", "--json", UNCREATABLE + ".json"], "cannot be created",
     None),
    ("#3 inspect --json under a file", ["inspect", "{gpt2}", "--json", "{file}/map.json"], "is a file, not a folder",
     lambda ws, fx: _file(ws, "notes.txt")),
    # 4, 17: learning rates
    ("#4 --lr nan", FT + ["--lr", "nan"], "--lr must be a finite number > 0", None),
    ("--lr inf", FT + ["--lr", "inf"], "--lr must be a finite number > 0", None),
    ("--lr 0", FT + ["--lr", "0"], "--lr must be a finite number > 0", None),
    ("--v-lr-ratio -4", FT + ["--v-lr-ratio=-4"], "--v-lr-ratio must be", None),
    ("--weight-decay nan", FT + ["--weight-decay", "nan"], "--weight-decay must be", None),
    ("#17 --lr 1e10 --method full diverges", FT + ["--lr", "1e10", "--method", "full", "--max-steps", "6",
                                                    "--log-every", "1"], "diverged", None),
    # 5, 20: sample sizes
    ("#5 --shots=-1", ICL_EVAL + ["--shots=-1"], "--shots must be an integer >= 0", None),
    ("#20 --n-eval 0", ICL_EVAL + ["--n-eval", "0"], "omit --n-eval", None),
    ("--shots 5000", ICL_EVAL + ["--shots", "5000"], "5000 shots per class", None),
    ("--batch-size 0", ICL_EVAL + ["--batch-size", "0"], "--batch-size must be an integer >= 1", None),
    ("--seed=-1", ICL_EVAL + ["--seed=-1"], "--seed must be an integer in [0,", None),
    ("--n-eval abc", ICL_EVAL + ["--n-eval", "abc"], "invalid int value: 'abc'", None),
    ("--dtype float8", ICL_EVAL + ["--dtype", "float8"], "unknown dtype 'float8'", None),
    ("--device bogus", ICL_EVAL + ["--device", "bogus"], "'bogus' is not a device", None),
    ("--device cuda:7", ICL_EVAL + ["--device", "cuda:7"], "CUDA device(s)", None),
    ("--svd-dtype float16", ["inspect", "{gpt2}", "--svd-dtype", "float16"], "invalid choice: 'float16'", None),
    # 6: tokenizer beyond the embedding
    ("#6 tokenizer larger than the embedding", ["icl", "eval", "--model", "{gpt2_96}", "--tokenizer", "gpt2-offline",
                                                "--task", "sst2", "--shots", "1", "--n-eval", "4", "--quiet"],
     "has 50257 tokens but", None),
    # 7, 15: task files
    ("#7 task file not UTF-8", ICL_EVAL + ["--task", "{task}"], "is not UTF-8 text: byte 0xe9 at offset 13",
     lambda ws, fx: _task(ws, raw=b'{"name": "caf\xe9"}')),
    ("#7 data file not UTF-8", ICL_EVAL + ["--task", "{task}"], "is not UTF-8 text: byte 0xff",
     lambda ws, fx: _task(ws, lines=b'{"text": "a", "y": "neg"}\n{"text": "\xff", "y": "pos"}\n')),
    ("#7 data: is a string", ICL_EVAL + ["--task", "{task}"], "field 'data' must be a mapping",
     lambda ws, fx: _task(ws, data="train.jsonl")),
    ("#7 template with an unmatched {", ICL_EVAL + ["--task", "{task}"], "is not a valid format string",
     lambda ws, fx: _task(ws, template="Review: {text\nSentiment:")),
    ("template with a positional {}", ICL_EVAL + ["--task", "{task}"], "must be a column name",
     lambda ws, fx: _task(ws, template="Review: {}\nSentiment:")),
    ("task file YAML syntax", ICL_EVAL + ["--task", "{task}"], "cannot be parsed",
     lambda ws, fx: _task(ws, raw=b"name: [unclosed\n", suffix=".yaml")),
    ("label_words count", ICL_EVAL + ["--task", "{task}"], "2 labels but 3 label_words",
     lambda ws, fx: _task(ws, label_words=["bad", "good", "meh"])),
    ("data record not an object", ICL_EVAL + ["--task", "{task}"], "record 1 is list",
     lambda ws, fx: _task(ws, lines=b'["a", "neg"]\n')),
    ("#15 label_words repeat a word", ICL_EVAL + ["--task", "{task}"], "label_words repeat ['good']",
     lambda ws, fx: _task(ws, label_words=["good", " good"])),
    ("unknown task", ICL_EVAL + ["--task", "nosuchtask"], "unknown task 'nosuchtask'", None),
    # 8, 9, 13: search options
    ("#8 --rates 0,abc", SEARCH + ["--rates", "0,abc"], "'abc' is not", None),
    ("--rates 0,1.5", SEARCH + ["--rates", "0,1.5"], "1.5 is outside [0, 1)", None),
    ("--rates 0,,0.5", SEARCH + ["--rates", "0,,0.5"], "'' is not", None),
    ("#9 --top-k 0", SEARCH + ["--strategy", "paper", "--top-k", "0"], "--top-k must be an integer >= 1", None),
    ("#13 --layers 5-2", SEARCH + ["--layers", "5-2"], "reversed range; write 2-5", None),
    ("--layers 1:1", SEARCH + ["--layers", "1:1"], "selects no layer", None),
    ("--layers 9", SEARCH + ["--layers", "9"], "layer 9 is out of range", None),
    ("--modules mlp_gate", SEARCH + ["--modules", "mlp_gate"], "module 'mlp_gate' is unknown", None),
    ("--n-val 0", SEARCH + ["--n-val", "0"], "--n-val must be an integer >= 1", None),
    ("damaged run.json", SEARCH, "run.json is damaged",  # in the search's own folder (listed by its manifest)
     lambda ws, fx: (_file(ws, "prev/run.json", '{"model": '), claim(ws / "prev", "icl search", ["run.json"]))[0]),
    # 10, 14: edit files
    ("#10 edit without edits", APPLY + ["{bad_edit}"], "missing the field 'edits'",
     lambda ws, fx: _edit(ws, fx, lambda d: d.pop("edits"))),
    ("#10 edits is a string", APPLY + ["{bad_edit}"], "field 'edits' must be a list",
     lambda ws, fx: _edit(ws, fx, _set(["edits"], "L1:mlp:0.5"))),
    ("edit entry without rate", APPLY + ["{bad_edit}"], "edits[0] is missing the field 'rate'",
     lambda ws, fx: _edit(ws, fx, lambda d: d["edits"][0].pop("rate"))),
    ("#14 negative rank", APPLY + ["{bad_edit}"], "records rank -3",
     lambda ws, fx: _edit(ws, fx, lambda d: d["matrices"][0].update(rank=-3))),
    ("#14 rank above the matrix", APPLY + ["{bad_edit}"], "records rank 999",
     lambda ws, fx: _edit(ws, fx, lambda d: d["matrices"][0].update(rank=999))),
    ("edit layer out of range", APPLY + ["{bad_edit}"], "layer 7 is out of range",
     lambda ws, fx: _edit(ws, fx, lambda d: d["edits"][0].update(layer=7))),
    ("edit rate 1.5", APPLY + ["{bad_edit}"], "rate 1.5 is outside [0, 1)",
     lambda ws, fx: _edit(ws, fx, lambda d: d["edits"][0].update(rate=1.5))),
    ("edit file not JSON", APPLY + ["{file}"], "is not valid JSON", lambda ws, fx: _file(ws, "e.json", "{")),
    ("icl eval --edit missing", ICL_EVAL + ["--edit", "{prev}/none.json"], "does not exist", None),
    # 11, 16, 18: fine-tuning options
    ("#11 --epochs=-1", FT + ["--epochs=-1"], "--epochs must be a finite number > 0", None),
    ("#11 --scheduler bogus", FT + ["--scheduler", "bogus"], "invalid choice: 'bogus'", None),
    ("scheduler from --config", FT + ["--config", "{file}"], "--scheduler must be one of",
     lambda ws, fx: _file(ws, "c.yaml", "scheduler: bogus\n")),
    ("lr .nan from --config", FT + ["--config", "{file}"], "--lr must be a finite number",
     lambda ws, fx: _file(ws, "c.yaml", "lr: .nan\n")),
    ("rank as text in --config", FT + ["--config", "{file}"], "invalid int value: 'two'",
     lambda ws, fx: _file(ws, "c.yaml", "rank: two\n")),
    ("rank 2.5 in --config", FT + ["--config", "{file}"], "--rank must be an integer",
     lambda ws, fx: _file(ws, "c.yaml", "rank: 2.5\n")),
    ("unknown key in --config", FT + ["--config", "{file}"], "unknown option 'learning_rate'",
     lambda ws, fx: _file(ws, "c.yaml", "learning_rate: 0.1\n")),
    ("--config not UTF-8", FT + ["--config", "{file}"], "is not UTF-8 text: byte 0xe9 at offset 11",
     lambda ws, fx: _file(ws, "c.yaml", b"lr: 1e-4 # \xe9\n")),
    ("finetune tokenizer larger than the embedding", FT + ["--tokenizer", "gpt2-offline"], "has 50257 tokens but",
     None),
    ("#16 --rank 5000", FT + ["--rank", "5000", "--max-steps", "1"], "above min(out, in) = 32", None),
    ("#18 --max-steps 0", FT + ["--max-steps", "0"], "--max-steps must be an integer >= 1", None),
    ("#18 --max-steps=-3", FT + ["--max-steps=-3"], "--max-steps must be an integer >= 1", None),
    ("#18 lab train --steps=-5", ["lab", "train", "--steps=-5", "--out", "{prev}", "--quiet"],
     "--steps must be an integer >= 1", None),
    ("--dropout 1", FT + ["--dropout", "1"], "--dropout must be a finite number in [0, 1)", None),
    ("--warmup=-1", FT + ["--warmup=-1"], "--warmup must be", None),
    ("--targets all --method lora", FT + ["--targets", "all", "--method", "lora"], "plain full fine-tuning", None),
    ("--max-steps and --epochs", FT + ["--max-steps", "2", "--epochs", "1"], "either --max-steps or --epochs",
     None),
    ("train file missing", FT_NO_OUT + ["--out", "{prev}", "--train-file", "{prev}/none.csv"], "none.csv", None),
    # issue 21, item 2: labels are read once, where the data enters; every record is checked
    ("21/2 JSON null label", FT_BAD, "record 7 has no label",
     lambda ws, fx: _data(ws, _JSONL + '{"text": "bad film", "label": null}\n', "bad.jsonl")),
    ("21/2 missing CSV label field", FT_BAD, "record 3 has no label",
     lambda ws, fx: _data(ws, "text,label\ngood film,1\nbad film,0\nso so film\n")),
    ("21/2 empty CSV label", FT_BAD, "record 2 has no label",
     lambda ws, fx: _data(ws, "text,label\ngood film,1\nbad film, \nfine film,0\n")),
    ("21/2 a later record without the label key", FT_BAD, "record 7 has no label",
     lambda ws, fx: _data(ws, _JSONL + '{"text": "bad film", "y": 0}\n', "bad.jsonl")),
    ("21/2 a later record without the text key", FT_BAD, "record 7 has no value for the text column 'text'",
     lambda ws, fx: _data(ws, _JSONL + '{"sentence": "bad film", "label": 0}\n', "bad.jsonl")),
    # issue 21, item 3: every --config value against its field's type, after the merge; all mistakes named
    ("21/3 calibrate: 'no'", ICL_EVAL + ["--config", "{file}"], "--calibrate must be true or "
     "false, got 'no'", lambda ws, fx: _file(ws, "c.yaml", "calibrate: 'no'\n")),
    ("21/3 dry_run: 'false'", SEARCH + ["--config", "{file}"], "--dry-run must be true or false",
     lambda ws, fx: _file(ws, "c.yaml", "dry_run: 'false'\n")),
    ("21/3 shots: null", ["icl", "eval", "--model", "{gpt2}", "--task", "sst2", "--config", "{file}"],
     "--shots must be an integer, got null",
     lambda ws, fx: _file(ws, "c.json", '{"shots": null}')),
    ("21/3 a mapping where a list belongs", SEARCH + ["--config", "{file}"], "--modules must be "
     "a string or a list, got {'mlp': 1}", lambda ws, fx: _file(ws, "c.yaml", "modules: {mlp: 1}\n")),
    ("21/3 int, dict and list where strings belong", FT + ["--config", "{file}"],
     "--label-column must be a string, got {'a': 1}; --tokenizer must "
     "be a string, got 7", lambda ws, fx: _file(ws, "c.yaml", "tokenizer: 7\nlabel_column: {a: 1}\n")),
    ("21/3 a list where a path belongs", ICL_EVAL + ["--config", "{file}"], "--data-dir must be "
     "a string, got ['a']", lambda ws, fx: _file(ws, "c.yaml", "data_dir: [a]\n")),
    ("21/3 --layers ''", SEARCH + ["--layers", ""], "--layers is empty", None),
    ("21/3 --modules ''", SEARCH + ["--modules", ""], "--modules is empty", None),
    # issue 21, item 8: three old crashes and three unclear messages
    ("21/8 an encoder in icl eval", ["icl", "eval", "--model", "{bert}", "--tokenizer", "{bert}", "--task", "sst2",
                                     "--shots", "1", "--n-eval", "4", "--quiet"],
     "is an encoder (bert), not a causal LM", None),
    ("21/8 config.json sizes do not match the weights", ICL_EVAL + ["--model", "{bad_model}"],
     "do not match its config.json", lambda ws, fx: _config(ws, fx, _set(["n_embd"], 64))),
    ("21/8 config.json value of the wrong type", ICL_EVAL + ["--model", "{bad_model}"],
     "Field 'n_layer' expected int, got str", lambda ws, fx: _config(ws, fx, _set(["n_layer"], "two"))),
    ("21/8 a task file named .txt", ICL_EVAL + ["--task", "{file}"], "a task file is .yaml, .yml or .json",
     lambda ws, fx: _file(ws, "task.txt", "name: mine\n")),
    ("21/8 --edit is a folder", ICL_EVAL + ["--edit", "{prev}"], "is a folder", None),
    # issue 21, item 6: devices inside a device map or a memory spec are checked as --device is
    ("21/6 a GPU index the machine lacks in a map", ICL_EVAL + ["--device-map", "{file}"],
     "--device-map (transformer.h.0 -> 99) cuda:99: this machine has",
     lambda ws, fx: _file(ws, "map.json", '{"transformer.h.0": 99, "transformer.h.1": "cpu"}')),
    ("21/6 a device called floppy", ICL_EVAL + ["--device-map", "{file}"], "'floppy' is not a device",
     lambda ws, fx: _file(ws, "map.json", '{"transformer": "floppy", "lm_head": "cpu"}')),
    ("21/6 a map naming no module of the model", ICL_EVAL + ["--device-map", "{file}"],
     "'model.layers.0' is not a module of", lambda ws, fx: _file(ws, "map.json", '{"model.layers.0": "cpu"}')),
    ("21/6 --max-memory for a GPU the machine lacks", ICL_EVAL + ["--device-map", "auto", "--max-memory", "99=1GB"],
     "--max-memory (99=...) cuda:99: this machine has", None),
    # 12: lab and demo
    ("#12 lab study --shots a,b", ["lab", "study", "--shots", "a,b", "--out", "{prev}"], "'a' is not an integer;",
     None),
    ("#12 lab study --seeds 0", ["lab", "study", "--seeds", "0", "--out", "{prev}"], "--seeds must be", None),
    ("lab train --out is a file", ["lab", "train", "--steps", "1", "--out", "{file}"], "is an existing file",
     lambda ws, fx: _file(ws, "notes.txt")),
    ("#12 demo --out is a file", ["demo", "--out", "{file}", "--quick", "--quiet"], "existing file",
     lambda ws, fx: _file(ws, "notes.txt")),
    # 19: inspect plot paths
    ("#19 --plot an existing folder", ["inspect", "{gpt2}", "--spectrum", "--plot", "{prev}"], "is a folder", None),
    ("--plot without an image suffix", ["inspect", "{gpt2}", "--plot", "{prev}/cond.txt"], "must end in .png",
     None),
    # the model argument
    ("model path missing", ["inspect", "{prev}/nope"], "does not exist", None),
    ("model config not JSON", ["inspect", "{prev}"], "not valid JSON",
     lambda ws, fx: _file(ws, "prev/config.json", "{not json")),
    ("unknown command", ["bogus"], "invalid choice: 'bogus'", None),
    ("missing --model", ["icl", "eval", "--task", "sst2"], "missing --model", None),
]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_the_table_is_large_enough():
    assert len(CASES) >= 50
    assert len({c[0] for c in CASES}) == len(CASES)
    tagged = {int(c[0][1:].split()[0]) for c in CASES if c[0].startswith("#")}
    assert tagged >= set(range(1, 21))  # items 21-22 (journal, lock) live in test_run_guards.py


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_no_output(case, fx, tmp_path, monkeypatch, capsys):
    name, argv, expected, setup = case
    ws = tmp_path
    (ws / "prev").mkdir()
    (ws / "prev" / "metrics.json").write_text('{"accuracy": 0.75}\n')  # a previous good result of this command
    claim(ws / "prev", " ".join(argv[:2] if argv[0] in ("icl", "lab") else argv[:1]), ["metrics.json"])
    places = {k: str(v) for k, v in fx.items()}
    places.update({"prev": str(ws / "prev"), "ws": str(ws)})
    if setup:
        places.update({k: str(v) for k, v in (setup(ws, fx) or {}).items()})
    argv = [a.format(**places) if "{" in a else a for a in argv]
    monkeypatch.chdir(ws)  # a default output folder would land here, where the snapshot sees it
    before = _snapshot(ws)

    code = main(argv)

    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("leantune: error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert _snapshot(ws) == before, "the command wrote or changed files"
