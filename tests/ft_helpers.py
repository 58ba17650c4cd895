"""Small fixtures for the fine-tuning tests: a tiny model directory with a tiny word-level tokenizer, and a
synthetic two-class text table whose label is decided by the words (so a few steps already learn it)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import torch
from transformers import BertTokenizer

from tiny import V, tiny_model

POS = ["good", "great", "fine", "nice", "happy", "lovely", "superb", "bright", "warm", "kind"]
NEG = ["bad", "awful", "poor", "sad", "ugly", "grim", "dull", "cold", "cruel", "weak"]
NEUTRAL = ["the", "a", "movie", "was", "plot", "actor", "it", "film", "and", "very", "story", "scene"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tokenizer(directory: Path) -> BertTokenizer:
    vocab = SPECIAL + POS + NEG + NEUTRAL
    assert len(vocab) <= V
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizer(str(directory / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(directory))
    return tok


def model_dir(tmp: Path, family: str = "bert", seed: int = 0, poison_head: bool = False) -> Path:
    """A tiny random seq-cls model saved with save_pretrained (safetensors) plus the tiny tokenizer."""
    d = tmp / f"tiny-{family}"
    model = tiny_model(family, seed=seed, head="seq-cls")
    model.config.pad_token_id = 0
    if poison_head:  # a head that makes the loss non-finite on the first step
        from leantune.arch import head_parameters

        with torch.no_grad():
            next(iter(head_parameters(model).values())).fill_(float("nan"))
    model.save_pretrained(str(d))
    write_tokenizer(d)
    return d


def sentences(n: int, seed: int = 0, labels=("neg", "pos")) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = rng.randrange(2)
        words = rng.sample(NEUTRAL, 4) + rng.sample(POS if y else NEG, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": labels[y]})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path
