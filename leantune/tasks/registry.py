"""The task registry: data (local files in their published formats, or the hub), fields, labels,
ICL templates and label words.

A record is a plain dict: the task's text fields, ``label`` (an index into ``Task.labels``) and
``idx`` (its position in the source split, so every run can say exactly which examples it used).

ICL rendering: an example becomes ``template.format(**record)`` (the context) followed by one
candidate continuation per answer (``" " + label word``, or per-record choices for COPA). Templates
for SST-2, RTE and CB are the SVD paper's Table 1; the others are ours, stated here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import LeantuneError
from . import files

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class LocalSplit:
    path: str  # relative to the data dir
    read: Callable[[Path], list[dict]]
    convert: Callable[[dict], dict]


@dataclass(frozen=True)
class HubSource:
    path: str  # datasets name
    config: str | None
    splits: dict[str, str]  # our split -> hub split
    convert: Callable[[dict], dict]


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    text_fields: tuple[str, ...]  # inputs of sequence classification (one text or a pair)
    template: str  # ICL context of one example; ``{field}`` placeholders
    label_words: tuple[str, ...] = ()  # ICL answer per label (classification)
    kind: str = "classification"  # or "multiple_choice" (per-record choices, e.g. COPA)
    metric: str = "accuracy"  # fine-tuning metric: accuracy | matthews | f1
    local: dict[str, LocalSplit] = field(default_factory=dict)
    hub: HubSource | None = None
    choices: Callable[[dict], list[str]] | None = None  # multiple choice: continuations of a record
    context: Callable[[dict], str] | None = None  # multiple choice: context of a record

    @property
    def self_contained(self) -> bool:
        """True for task files (absolute paths) and generated tasks ("<...>"): no data dir involved."""
        return bool(self.local) and all(Path(s.path).is_absolute() or s.path.startswith("<")
                                        for s in self.local.values())

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def render_context(self, record: dict) -> str:
        if self.context is not None:
            return self.context(record)
        try:
            return self.template.format(**record)
        except KeyError as e:
            raise LeantuneError(f"task {self.name}: template {self.template!r} names field {e} which the data does "
                                f"not have (fields: {sorted(k for k in record if k not in ('label', 'idx'))})") from None

    def continuations(self, record: dict) -> list[str]:
        if self.kind == "multiple_choice":
            return self.choices(record)
        return [" " + w for w in self.label_words]


def _label_map(names: dict[str, int]) -> Callable[[str], int]:
    def conv(v):
        key = str(v).strip()
        if key not in names:
            raise LeantuneError(f"unexpected label value {v!r}; expected one of {sorted(names)}")
        return names[key]
    return conv


def _pick(**rename) -> Callable[[dict], dict]:
    """Record converter: ``our_field=source_field`` renames, plus ``label=callable`` conversion."""
    label_conv = rename.pop("label")

    def conv(row: dict) -> dict:
        out = {ours: row[src] for ours, src in rename.items()}
        out["label"] = label_conv(row)
        return out
    return conv


def _copa_context(r: dict) -> str:
    # as lm-eval: drop the premise's final period, join with the connector of the question type
    connector = {"cause": "because", "effect": "therefore"}[r["question"]]
    return r["premise"].strip()[:-1] + f" {connector}"


def _copa_choices(r: dict) -> list[str]:
    return [" " + c[0].lower() + c[1:] for c in (r["choice1"], r["choice2"])]


_bin = _label_map({"0": 0, "1": 1})
_ent2 = _label_map({"entailment": 0, "not_entailment": 1, "0": 0, "1": 1})
_cb = _label_map({"entailment": 0, "contradiction": 1, "neutral": 2, "0": 0, "1": 1, "2": 2})
_emo = _label_map({"others": 0, "happy": 1, "sad": 2, "angry": 3, "0": 0, "1": 1, "2": 2, "3": 3})
_tf = _label_map({"false": 1, "true": 0, "False": 1, "True": 0, "0": 1, "1": 0})  # label 0 = Yes/true

TASKS: dict[str, Task] = {}


def _register(task: Task) -> None:
    TASKS[task.name] = task


_register(Task(
    "sst2", labels=("negative", "positive"), text_fields=("sentence",),
    template="text: {sentence}\nsentiment :", label_words=("negative", "positive"),
    local={s: LocalSplit(f"sst2/stsa.binary.{f}", files.read_label_first_lines,
                         _pick(sentence="sentence", label=lambda r: _bin(r["label"])))
           for s, f in (("train", "train"), ("validation", "dev"), ("test", "test"))},
    hub=HubSource("nyu-mll/glue", "sst2", {"train": "train", "validation": "validation"},
                  _pick(sentence="sentence", label=lambda r: int(r["label"]))),
))
_register(Task(
    "rte", labels=("entailment", "not_entailment"), text_fields=("premise", "hypothesis"),
    template="{premise} Does this mean that {hypothesis} is true? select Yes or No?", label_words=("Yes", "No"),
    local={s: LocalSplit(f"rte/{f}.jsonl", files.read_jsonl,
                         _pick(premise="premise", hypothesis="hypothesis", label=lambda r: _ent2(r["label"])))
           for s, f in (("train", "train"), ("validation", "val"))},
    hub=HubSource("aps/super_glue", "rte", {"train": "train", "validation": "validation"},
                  _pick(premise="premise", hypothesis="hypothesis", label=lambda r: int(r["label"]))),
))
_register(Task(
    "cb", labels=("entailment", "contradiction", "neutral"), text_fields=("premise", "hypothesis"),
    template="Suppose {premise} Can we infer that {hypothesis}? Yes, No, or Maybe?",
    label_words=("Yes", "No", "Maybe"),
    local={s: LocalSplit(f"cb/{f}.jsonl", files.read_jsonl,
                         _pick(premise="premise", hypothesis="hypothesis", label=lambda r: _cb(r["label"])))
           for s, f in (("train", "train"), ("validation", "val"))},
    hub=HubSource("aps/super_glue", "cb", {"train": "train", "validation": "validation"},
                  _pick(premise="premise", hypothesis="hypothesis", label=lambda r: int(r["label"]))),
))
_register(Task(
    "copa", labels=("choice1", "choice2"), text_fields=("premise", "choice1", "choice2"),
    template="{premise}", kind="multiple_choice", choices=_copa_choices, context=_copa_context,
    local={s: LocalSplit(f"copa/{f}.jsonl", files.read_jsonl,
                         _pick(premise="premise", choice1="choice1", choice2="choice2", question="question",
                               label=lambda r: _bin(r["label"])))
           for s, f in (("train", "train"), ("validation", "val"))},
    hub=HubSource("aps/super_glue", "copa", {"train": "train", "validation": "validation"},
                  _pick(premise="premise", choice1="choice1", choice2="choice2", question="question",
                        label=lambda r: int(r["label"]))),
))
_register(Task(
    "mrpc", labels=("not_equivalent", "equivalent"), text_fields=("sentence1", "sentence2"),
    template="Sentence 1: {sentence1}\nSentence 2: {sentence2}\nDo both sentences mean the same thing?",
    label_words=("No", "Yes"), metric="f1",
    local={s: LocalSplit(f"mrpc/{f}.tsv", files.read_tsv,
                         _pick(sentence1="#1 String", sentence2="#2 String", label=lambda r: _bin(r["Quality"])))
           for s, f in (("train", "train"), ("validation", "dev"))},
    hub=HubSource("nyu-mll/glue", "mrpc", {"train": "train", "validation": "validation", "test": "test"},
                  _pick(sentence1="sentence1", sentence2="sentence2", label=lambda r: int(r["label"]))),
))
_register(Task(
    "cola", labels=("unacceptable", "acceptable"), text_fields=("sentence",),
    template="Sentence: {sentence}\nIs this sentence grammatical?", label_words=("No", "Yes"), metric="matthews",
    local={s: LocalSplit(f"cola/{f}.tsv", lambda p: files.read_tsv(p, header=False,
                                                                  fieldnames=["source", "label", "mark", "sentence"]),
                         _pick(sentence="sentence", label=lambda r: _bin(r["label"])))
           for s, f in (("train", "in_domain_train"), ("validation", "in_domain_dev"), ("test", "out_of_domain_dev"))},
    hub=HubSource("nyu-mll/glue", "cola", {"train": "train", "validation": "validation"},
                  _pick(sentence="sentence", label=lambda r: int(r["label"]))),
))
_register(Task(
    "qnli", labels=("entailment", "not_entailment"), text_fields=("question", "sentence"),
    template="{question}\n{sentence}\nDoes the sentence answer the question?", label_words=("Yes", "No"),
    local={"validation": LocalSplit("qnli/dev.tsv", files.read_tsv,
                                    _pick(question="question", sentence="sentence",
                                          label=lambda r: _ent2(r["label"])))},
    hub=HubSource("nyu-mll/glue", "qnli", {"train": "train", "validation": "validation"},
                  _pick(question="question", sentence="sentence", label=lambda r: int(r["label"]))),
))
_register(Task(
    "boolq", labels=("true", "false"), text_fields=("question", "passage"),
    template="{passage}\nQuestion: {question}?\nAnswer:", label_words=("Yes", "No"),
    local={"validation": LocalSplit("boolq/val.jsonl", files.read_jsonl,
                                    _pick(question="question", passage="passage", label=lambda r: _tf(r["label"])))},
    hub=HubSource("google/boolq", None, {"train": "train", "validation": "validation"},
                  _pick(question="question", passage="passage", label=lambda r: 0 if r["answer"] else 1)),
))
_register(Task(
    "emoc", labels=("others", "happy", "sad", "angry"), text_fields=("turn1", "turn2", "turn3"),
    template="Dialogue: {turn1} {turn2} {turn3}\nEmotion:", label_words=("others", "happy", "sad", "angry"),
    local={s: LocalSplit(f"emoc/{f}.txt", files.read_tsv,
                         _pick(turn1="turn1", turn2="turn2", turn3="turn3", label=lambda r: _emo(r["label"])))
           for s, f in (("train", "train"), ("validation", "dev"), ("test", "test"))},
    hub=HubSource("SemEvalWorkshop/emo", None, {"train": "train", "test": "test"},
                  lambda r: {"turn1": r["text"], "turn2": "", "turn3": "", "label": int(r["label"])}),
))
_register(Task(
    "agnews", labels=("World", "Sports", "Business", "Sci/Tech"), text_fields=("text",),
    template="Article: {text}\nAnswer:", label_words=("World", "Sports", "Business", "Technology"),
    # Locally only the published test split ships (``agnews/test.csv``): the ICL splits carve test first and
    # draw demonstrations/validation from the rest; fine-tuning carves its eval split (both seeded, recorded).
    local={"test": LocalSplit("agnews/test.csv", files.read_table,
                              lambda r: {"text": f"{r['Title']} {r['Description']}",
                                         "label": int(r["Class Index"]) - 1})},
    hub=HubSource("fancyzhx/ag_news", None, {"train": "train", "test": "test"},
                  _pick(text="text", label=lambda r: int(r["label"]))),
))


# Task families generated from their name, "prefix:arg" (or the bare prefix) -> Task. A provider registers
# itself with one line where it lives (the lab's "lab:N" in leantune/lab/synthetic.py); the tasks room never
# imports the rooms above it.
PROVIDERS: dict[str, Callable[[str], Task]] = {}


def register_provider(prefix: str, provider: Callable[[str], Task]) -> None:
    """``provider(name)`` builds the task for ``name`` = ``prefix`` or ``prefix:...``."""
    PROVIDERS[prefix] = provider


def get_task(name: str) -> Task:
    prefix = name.split(":", 1)[0]
    if prefix in PROVIDERS:
        return PROVIDERS[prefix](name)
    if name not in TASKS:
        raise LeantuneError(f"unknown task '{name}'; known tasks: {', '.join(TASKS)} (or pass a task file)")
    return TASKS[name]


def available_splits(task: Task, data_dir: Path | None) -> tuple[str, ...]:
    if task.local and (data_dir is not None or task.self_contained):
        return tuple(s for s in SPLITS if s in task.local)
    return tuple(s for s in SPLITS if task.hub and s in task.hub.splits)


def load_split(task: Task, split: str, data_dir: Path | str | None = "default") -> list[dict]:
    """Records of one split, from local files when a data dir is known (and has them), else the hub."""
    if data_dir == "default":
        data_dir = files.default_data_dir()
    data_dir = Path(data_dir) if data_dir is not None else None
    if task.self_contained:
        data_dir = data_dir or Path("/")  # its own files (or generated records), wherever the data dir is
    if data_dir is not None and task.local:
        if split not in task.local:
            raise LeantuneError(f"task {task.name} has no local '{split}' split in {data_dir}; "
                                f"available: {', '.join(task.local)}")
        spec = task.local[split]
        rows = spec.read(data_dir / spec.path)  # absolute paths (task files) ignore data_dir
        records = [{**spec.convert(r), "idx": i} for i, r in enumerate(rows)]
    else:
        records = _load_hub(task, split)
    if not records:
        raise LeantuneError(f"task {task.name}: split '{split}' is empty")
    return records


def _load_hub(task: Task, split: str) -> list[dict]:
    if task.hub is None:
        raise LeantuneError(f"task {task.name} has no hub source and no local data dir; set LEANTUNE_DATA_DIR")
    if split not in task.hub.splits:
        raise LeantuneError(f"task {task.name} has no '{split}' split on the hub; available: "
                            f"{', '.join(task.hub.splits)}")
    import datasets

    try:
        ds = datasets.load_dataset(task.hub.path, task.hub.config, split=task.hub.splits[split])
    except Exception as e:  # network, missing dataset, offline mode: all one line for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LeantuneError(f"cannot load {task.hub.path}{'/' + task.hub.config if task.hub.config else ''} "
                            f"from the hub ({first}); set LEANTUNE_DATA_DIR to local files") from None
    return [{**task.hub.convert(r), "idx": i} for i, r in enumerate(ds)]


def only_local_split(task: Task, data_dir) -> str | None:
    """The one labelled split a task has locally when it lacks a train split (BoolQ, QNLI, AG News), else None."""
    have = available_splits(task, None if data_dir is None else Path(data_dir))
    return have[0] if len(have) == 1 and "train" not in have else None


def carve(records: list[dict], n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Split off ``n`` records at random (fixed by ``seed``): (carved, rest). Order of both is preserved."""
    if n > len(records):
        raise LeantuneError(f"cannot take {n} examples from a split of {len(records)}")
    picked = set(random.Random(seed).sample(range(len(records)), n))
    return ([r for i, r in enumerate(records) if i in picked], [r for i, r in enumerate(records) if i not in picked])
