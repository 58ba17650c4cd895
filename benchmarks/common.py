"""Shared set-up of the ICL benchmarks: a GPT-2-small-shaped random model with the real GPT-2 tokenizer."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

RESULTS = Path(__file__).parent / "results"


def gpt2_small_random(seed: int = 0):
    """12 layers, 768 wide, 12 heads, the GPT-2 vocabulary; random weights (no pretrained LM offline)."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    cfg._attn_implementation = "sdpa"
    return tf.GPT2LMHeadModel(cfg).eval()


def bench_model(name: str):
    """(model, tokenizer, folder lm-eval can load, description): ``gpt2-random`` or any leantune model name."""
    if name == "gpt2-random":
        from leantune.models import gpt2_tokenizer_offline

        return gpt2_small_random(), gpt2_tokenizer_offline(), None, "gpt2-small-shaped random (12x768, 12 heads)"
    from leantune.models import load_model, load_tokenizer, model_source, resolve

    model = load_model(name, head="causal-lm", dtype="float32")
    src = model_source(name).get("gguf")
    what = f"{name} ({src['quantization']} GGUF dequantized to float32)" if src else name
    return model, load_tokenizer(name), Path(resolve(name)), what


def result_name(base: str, model: str) -> str:
    """The random GPT-2 keeps the historical file name; other models get their own file."""
    return base if model == "gpt2-random" else f"{base}_{model}"


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  cwd=Path(__file__).parent).stdout.strip()}


def read_jsonl(path: Path) -> list[dict]:
    """The records of a resumable benchmark's JSONL; a line torn by a kill is skipped (that unit is redone)."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_jsonl(path: Path, rec: dict) -> None:
    """Append one finished unit; never glue it onto a torn last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.is_file() else ""
    with open(path, "a") as f:
        if text and not text.endswith("\n"):
            f.write("\n")
        f.write(json.dumps(rec) + "\n")


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def replace_block(doc: Path, name: str, text: str) -> bool:
    """Put ``text`` between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in ``doc`` (a page that quotes a
    generated table keeps quoting the current one). False when the page has no such markers."""
    if not doc.is_file():
        return False
    page = doc.read_text(encoding="utf-8")
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin not in page or end not in page:
        return False
    head, rest = page.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}", encoding="utf-8")
    return True
