"""Sequence-classification data for fine-tuning: built-in tasks or custom files, tokenized, plus metrics.

Splits: train on the task's train split, evaluate on its validation (dev) split. QNLI and BoolQ have
only a validation split in ``../shared/data``: we carve ``CARVE_EVAL`` records from it with seed
``CARVE_SEED`` as our eval split and train on the rest (reported in metrics.json as ``data.note``).
Tasks with more than two text fields (EmoC's three turns) put the first in segment A and join the
rest with the tokenizer's separator token into segment B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import LeantuneError
from ..tasks import available_splits, carve, load_split, resolve_task
from ..tasks.registry import only_local_split
from ..tasks.files import default_data_dir, read_table
from .config import FinetuneConfig

CARVE_SEED = 0
CARVE_EVAL = 1000
METRICS = ("accuracy", "matthews", "f1")


@dataclass
class ClassificationData:
    task: str
    labels: tuple[str, ...]
    text_fields: tuple[str, ...]
    metric: str
    train: list[dict]
    eval: list[dict]
    note: str = ""
    sources: dict = field(default_factory=dict)
    spec: object = None  # the Task (template, label words) of a built-in task or task file; None for --train-file


def load_data(cfg: FinetuneConfig) -> ClassificationData:
    data = _custom(cfg) if cfg.train_file else _builtin(cfg)
    if cfg.max_train_samples and cfg.max_train_samples < len(data.train):
        data.train = carve(data.train, cfg.max_train_samples, cfg.seed)[0]
    if cfg.max_eval_samples and cfg.max_eval_samples < len(data.eval):
        data.eval = carve(data.eval, cfg.max_eval_samples, CARVE_SEED)[0]
    return data


def _builtin(cfg: FinetuneConfig) -> ClassificationData:
    task = resolve_task(cfg.task or "sst2")  # a built-in name or a task file
    if task.kind != "classification":
        raise LeantuneError(f"task {task.name} is {task.kind.replace('_', ' ')}, not sequence classification; "
                            "fine-tune on a classification task")
    data_dir = default_data_dir() if cfg.data_dir is None else Path(cfg.data_dir)
    splits = available_splits(task, data_dir)
    note = ""
    if "train" in splits:
        train = load_split(task, "train", data_dir)
        eval_split = "validation" if "validation" in splits else "test"
        evals = load_split(task, eval_split, data_dir)
    else:
        only = only_local_split(task, data_dir) or "validation"
        records = load_split(task, only, data_dir)
        n = min(CARVE_EVAL, len(records) // 3)
        evals, train = carve(records, n, CARVE_SEED)
        note = (f"{task.name} has no local train split: eval = {n} records of {only} carved with seed "
                f"{CARVE_SEED}, train = the other {len(train)}")
    return ClassificationData(task.name, task.labels, task.text_fields, task.metric, train, evals, note,
                              {"data_dir": str(data_dir) if data_dir else "hub"}, spec=task)


def label_text(value) -> str | None:
    """A label as one canonical string, read once where data enters: numbers equal as numbers are one label
    (``0``, ``0.0`` and ``"0.0"``, as pandas exports integer labels, are all ``"0"``); None for a missing
    label (JSON null, an empty CSV field)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value).strip()
    if not text:
        return None
    try:
        x = float(text)
    except ValueError:
        return text
    if not math.isfinite(x):  # "nan", "inf" are words here, not numbers
        return text
    return str(int(x)) if x.is_integer() else repr(x)


def _label_order(label: str):
    """Numbers in numeric order (2 before 10), then words in text order."""
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)


def _read_custom(path: str, cfg: FinetuneConfig) -> list[dict]:
    """The file's rows as {text columns..., "label": canonical label}; every row is checked, not only the first."""
    rows = read_table(Path(path))
    if not rows:
        raise LeantuneError(f"{path} holds no rows")
    if not cfg.text_columns:
        raise LeantuneError("custom data needs --text-columns (one or two column names, comma-separated)")
    columns = list(rows[0])
    for col in [*cfg.text_columns, cfg.label_column]:
        if col not in columns:
            raise LeantuneError(f"{path} has no column '{col}'; its columns are: {', '.join(map(str, columns))}")
    out = []
    for n, r in enumerate(rows, 1):  # n: the record's number (a CSV's header row not counted)
        texts = {}
        for c in cfg.text_columns:
            if r.get(c) is None:
                raise LeantuneError(f"{path}: record {n} has no value for the text column '{c}'; fill it in or "
                                    "remove the record")
            texts[c] = str(r[c])
        label = label_text(r.get(cfg.label_column))
        if label is None:
            raise LeantuneError(f"{path}: record {n} has no label (column '{cfg.label_column}' is missing, empty or "
                                "null); fill it in or remove the record")
        out.append({**texts, "label": label})
    return out


def _custom(cfg: FinetuneConfig) -> ClassificationData:
    metric = cfg.metric or "accuracy"
    if metric not in METRICS:
        raise LeantuneError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    train_rows = _read_custom(cfg.train_file, cfg)
    # labels: the distinct (canonical) values of the train file's label column, numbers in numeric order
    labels = tuple(sorted({r["label"] for r in train_rows}, key=_label_order))
    if len(labels) < 2:
        raise LeantuneError(f"label column '{cfg.label_column}' of {cfg.train_file} has a single value {labels}; "
                            "classification needs at least two")
    index = {v: i for i, v in enumerate(labels)}

    def records(rows, path):
        unseen = sorted({r["label"] for r in rows} - set(index), key=_label_order)
        if unseen:
            raise LeantuneError(f"label column '{cfg.label_column}' of {path} has value(s) never seen in "
                                f"{cfg.train_file}: {', '.join(map(repr, unseen[:5]))}; known labels: "
                                f"{', '.join(labels)}")
        return [{**r, "label": index[r["label"]], "idx": i} for i, r in enumerate(rows)]

    train = records(train_rows, cfg.train_file)
    note = ""
    if cfg.eval_file:
        evals = records(_read_custom(cfg.eval_file, cfg), cfg.eval_file)
    else:
        n = max(1, len(train) // 10)
        evals, train = carve(train, n, CARVE_SEED)
        note = f"no eval file: eval = {n} records of the train file carved with seed {CARVE_SEED}"
    name = cfg.task or Path(cfg.train_file).stem
    return ClassificationData(name, labels, tuple(cfg.text_columns), metric, train, evals, note,
                              {"train_file": cfg.train_file, "eval_file": cfg.eval_file})


class Encoded(torch.utils.data.Dataset):
    """Tokenized records; padding happens per batch in the collator."""

    def __init__(self, records: list[dict], tokenizer, text_fields, max_length: int):
        a = [r[text_fields[0]] for r in records]
        kwargs = dict(truncation=True, max_length=max_length)
        if len(text_fields) > 1:
            sep = f" {tokenizer.sep_token} " if tokenizer.sep_token else " "
            b = [sep.join(r[f] for f in text_fields[1:]) for r in records]
            enc = tokenizer(a, b, **kwargs)
        else:
            enc = tokenizer(a, **kwargs)
        self.features = [{k: enc[k][i] for k in enc.keys()} | {"labels": r["label"]} for i, r in enumerate(records)]

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i]


# --- metrics ------------------------------------------------------------------------------------------------
def compute_metrics(preds, labels, metric: str, num_labels: int) -> dict:
    preds, labels = [int(p) for p in preds], [int(y) for y in labels]
    out = {"accuracy": sum(p == y for p, y in zip(preds, labels)) / max(1, len(labels))}
    if metric == "matthews" or num_labels == 2:
        out["matthews"] = matthews(preds, labels, num_labels)
    if num_labels == 2:
        out["f1"] = f1_binary(preds, labels)
    out["score"] = out[metric]  # the task's own metric, under one name for curves and comparisons
    return out


def matthews(preds, labels, k: int) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004; equals the binary phi coefficient)."""
    c = [[0] * k for _ in range(k)]
    for p, y in zip(preds, labels):
        c[y][p] += 1
    t = [sum(c[i]) for i in range(k)]  # true counts
    p = [sum(c[i][j] for i in range(k)) for j in range(k)]  # predicted counts
    n = sum(t)
    correct = sum(c[i][i] for i in range(k))
    num = correct * n - sum(t[i] * p[i] for i in range(k))
    den = math.sqrt(n * n - sum(x * x for x in p)) * math.sqrt(n * n - sum(x * x for x in t))
    return num / den if den else 0.0


def f1_binary(preds, labels) -> float:
    """F1 of the positive class (label index 1), as GLUE reports for MRPC."""
    tp = sum(p == 1 and y == 1 for p, y in zip(preds, labels))
    fp = sum(p == 1 and y == 0 for p, y in zip(preds, labels))
    fn = sum(p == 0 and y == 1 for p, y in zip(preds, labels))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
