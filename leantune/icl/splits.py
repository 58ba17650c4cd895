"""Which examples are demonstrations, validation and test — fixed by seed and recorded.

* Pool: the task's ``train`` split. Tasks with only a labelled ``validation`` split locally (BoolQ,
  QNLI) carve the test set out of it first (seeded) and use the rest as the pool.
* Demonstrations: ``shots`` per class from the pool, drawn with ``random.Random(seed)``, class by
  class in label order, then shuffled with the same generator (so no class always comes last).
* Validation: ``n_val`` random pool examples disjoint from the demonstrations (the SVD paper carves
  its validation set from train).
* Confirmation (guarded selection only): ``n_confirm`` random pool examples disjoint from the
  demonstrations and the validation set, drawn after them (so adding it changes no other split); ``"auto"``
  takes up to 200 of what remains.
* Test: ``n_test`` random examples (all when None) of ``test_split`` (default: ``validation``,
  since GLUE/SuperGLUE test labels are hidden), kept in source order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import LeantuneError
from ..tasks import Task, available_splits, default_data_dir, load_split


@dataclass
class ICLData:
    demos: list[dict]
    val: list[dict]
    test: list[dict]
    sources: dict
    confirm: list[dict] = field(default_factory=list)

    def manifest(self) -> dict:
        out = {"demonstrations": [d["idx"] for d in self.demos], "validation": [r["idx"] for r in self.val],
               "test": [r["idx"] for r in self.test], "sources": self.sources}
        if self.confirm:
            out["confirmation"] = [r["idx"] for r in self.confirm]
        return out


AUTO_CONFIRM = 200  # "auto": a confirmation split of up to this many examples (fewer where the pool is small)


def _sample(records: list[dict], n: int | None, rng: random.Random, what: str) -> list[dict]:
    if n is None or n >= len(records):
        if n is not None and n > len(records):
            raise LeantuneError(f"asked for {n} {what} examples but only {len(records)} are available")
        return list(records)
    keep = set(rng.sample(range(len(records)), n))
    return [r for i, r in enumerate(records) if i in keep]


def select_demos(task: Task, pool: list[dict], shots: int, rng: random.Random) -> list[dict]:
    demos = []
    for label, name in enumerate(task.labels):
        of_class = [r for r in pool if r["label"] == label]
        if shots > len(of_class):
            raise LeantuneError(f"{shots} shots per class but class '{name}' has only {len(of_class)} examples "
                                "to draw demonstrations from; lower --shots")
        demos += rng.sample(of_class, shots)
    rng.shuffle(demos)
    return demos


def make_icl_data(task: Task, shots: int, n_val: int | None, n_test: int | None, seed: int,
                  data_dir="default", test_split: str = "validation", n_confirm: int | str = 0) -> ICLData:
    if data_dir == "default":
        data_dir = default_data_dir()
    rng = random.Random(seed)
    have = available_splits(task, data_dir)
    if test_split == "validation" and test_split not in have and have == ("test",):
        test_split = "test"  # AG News ships only its test split locally: the default follows it (recorded)
    test_all = load_split(task, test_split, data_dir)
    sources = {"test": test_split}
    if "train" in have and test_split != "train":
        pool = load_split(task, "train", data_dir)
        sources["pool"] = "train"
        test = _sample(test_all, n_test, rng, "test")
    else:  # one labelled split only: test first, the rest is the pool
        test = _sample(test_all, n_test, rng, "test")
        used = {r["idx"] for r in test}
        pool = [r for r in test_all if r["idx"] not in used]
        sources["pool"] = f"{test_split} minus test"
    demos = select_demos(task, pool, shots, rng) if shots else []
    demo_idx = {d["idx"] for d in demos}
    rest = [r for r in pool if r["idx"] not in demo_idx]
    val = _sample(rest, n_val, rng, "validation") if n_val else []
    if not test:
        raise LeantuneError(f"task {task.name}: the {test_split} split is empty")
    confirm = []
    if n_confirm:  # drawn last, from what demonstrations and validation left: the other splits stay as they were
        val_idx = {r["idx"] for r in val}
        left = [r for r in rest if r["idx"] not in val_idx]
        want = min(AUTO_CONFIRM, len(left)) if n_confirm == "auto" else n_confirm
        confirm = _sample(left, want, rng, "confirmation") if want else []
    return ICLData(demos, val, test, sources, confirm)
