"""Custom tasks from a YAML or JSON file.

```yaml
name: my-sentiment
data:                      # paths relative to this file; .jsonl/.json/.csv/.tsv
  train: train.jsonl
  validation: dev.jsonl
label_field: label         # column holding the label
labels: [neg, pos]         # label values as they appear in the data, in index order
# classification:
text_fields: [text]        # inputs (for fine-tuning; ICL uses the template)
template: "Review: {text}\nSentiment:"
label_words: [bad, good]   # ICL answer per label
# or multiple choice (per-record choices, scored by continuation log-likelihood):
# choice_fields: [choice1, choice2]   # label = index of the right choice (0-based)
```
"""

from __future__ import annotations

import string
from pathlib import Path

from ..config import read_config_file
from ..errors import LeantuneError
from ..schema import LIST, MAPPING, TEXT, TEXT_LIST, check_fields
from . import files
from .registry import LocalSplit, Task

KEYS = {"name", "data", "label_field", "labels", "text_fields", "template", "label_words", "choice_fields", "metric"}


def load_task_file(path: str) -> Task:
    spec = read_config_file(path)
    unknown = set(spec) - KEYS
    if unknown:
        raise LeantuneError(f"task file {path}: unknown keys {sorted(unknown)}; known: {sorted(KEYS)}")
    for key in ("data", "template"):
        if key not in spec:
            raise LeantuneError(f"task file {path}: missing '{key}'")
    check_task_spec(spec, path)
    base = Path(path).resolve().parent
    label_field = spec.get("label_field", "label")
    choice_fields = spec.get("choice_fields")
    if choice_fields:
        labels = tuple(f"choice{i + 1}" for i in range(len(choice_fields)))
        values = {str(i): i for i in range(len(choice_fields))}
    else:
        if "labels" not in spec or "label_words" not in spec:
            raise LeantuneError(f"task file {path}: a classification task needs 'labels' and 'label_words'")
        labels = tuple(str(v) for v in spec["labels"])
        values = {v: i for i, v in enumerate(labels)}

    def convert(row: dict) -> dict:
        if label_field not in row:
            raise LeantuneError(f"task file {path}: label column '{label_field}' is missing from the data "
                                f"(columns: {sorted(row)})")
        value = str(row[label_field]).strip()
        if value not in values:
            raise LeantuneError(f"task file {path}: label value {value!r} is not one of the declared labels "
                                f"{sorted(values)}")
        return {**{k: v for k, v in row.items() if k != label_field}, "label": values[value]}

    local = {split: LocalSplit(str((base / p).resolve()), files.read_table, convert)
             for split, p in spec["data"].items()}
    common = dict(name=spec.get("name", Path(path).stem), labels=labels,
                  text_fields=tuple(spec.get("text_fields", ())), template=spec["template"],
                  metric=spec.get("metric", "accuracy"), local=local)
    if choice_fields:
        return Task(**common, kind="multiple_choice",
                    choices=lambda r: [" " + str(r[f]) for f in choice_fields])
    return Task(**common, label_words=tuple(str(w) for w in spec["label_words"]))


def check_task_spec(spec: dict, path: str) -> None:
    """Types, template syntax and distinct labels / label words, before any data is read."""
    check_fields(spec, f"task file {path}", {"data": MAPPING, "template": TEXT},
                 {"name": TEXT, "label_field": TEXT, "labels": LIST, "text_fields": TEXT_LIST,
                  "label_words": TEXT_LIST, "choice_fields": TEXT_LIST, "metric": TEXT})
    if not spec["data"]:
        raise LeantuneError(f"task file {path}: 'data' names no split; give e.g. train: train.jsonl")
    for split, file in spec["data"].items():
        if not isinstance(file, str):
            raise LeantuneError(f"task file {path}: data.{split} must be a file name, got {file!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(spec["template"]) if f is not None]
    except ValueError as e:  # "Single '{' encountered in format string", ...
        raise LeantuneError(f"task file {path}: the template {spec['template']!r} is not a valid format string "
                            f"({e}); write {{{{ and }}}} for literal braces") from None
    for f in fields:
        if not f.isidentifier():
            raise LeantuneError(f"task file {path}: the template field {{{f}}} must be a column name, "
                                "e.g. {text}; write {{ and }} for literal braces")
    if spec.get("choice_fields") is not None and len(spec["choice_fields"]) < 2:
        raise LeantuneError(f"task file {path}: choice_fields needs at least two columns")
    labels, words = spec.get("labels"), spec.get("label_words")
    if not spec.get("choice_fields") and labels is not None and words is not None:
        if len(labels) < 2 or len(set(map(str, labels))) != len(labels):
            raise LeantuneError(f"task file {path}: labels must be at least two distinct values, got {labels}")
        if len(words) != len(labels):
            raise LeantuneError(f"task file {path}: {len(labels)} labels but {len(words)} label_words; "
                                "give one answer word per label, in the same order")
        stripped = [w.strip() for w in words]
        dup = sorted({w for w in stripped if stripped.count(w) > 1})
        if dup:
            raise LeantuneError(f"task file {path}: label_words repeat {dup}; each label needs its own word, "
                                "or the labels cannot be told apart")


def resolve_task(name_or_path: str) -> Task:
    """A registered task name, or a path to a task file."""
    from .registry import get_task

    if name_or_path.endswith((".yaml", ".yml", ".json")):
        return load_task_file(name_or_path)
    p = Path(name_or_path)
    if p.suffix and (p.exists() or "/" in name_or_path or p.suffix.lower() in (".txt", ".jsonl", ".csv", ".tsv")):
        # a file, not a name: say what a task file is rather than "unknown task"
        raise LeantuneError(f"task file {name_or_path}: a task file is .yaml, .yml or .json (format in "
                            f"leantune/tasks/taskfile.py), not {p.suffix}; data files are named inside it")
    return get_task(name_or_path)
