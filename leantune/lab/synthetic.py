"""A synthetic in-context classification family in which labels can only come from the demonstrations.

World (fixed, seed-independent): ``NUM_CLUSTERS`` latent clusters of ``WORDS_PER_CLUSTER`` input words
(``w0307`` = word 7 of cluster 3) and a pool of label words. A task *instance* draws its own
assignment: two classes, each the union of two random clusters, and two label words, mapped at
random. So

* there is no fixed input -> label mapping to memorize (0-shot accuracy is chance), and
* a query is a word of one of the two clusters that is *not* among the demonstrations, so copying is
  not enough: the model has to know which words share a cluster (learned across training) and read
  the cluster's label off the demonstrations.

Assignments are split once and for all: those whose (cluster pair, label pair) falls in
``held_out()`` never appear in training and are the only ones used for evaluation.

Each instance is an ordinary :class:`~leantune.tasks.Task` (template ``"{x}"``, its label words,
train/validation/test splits of records), so every ICL tool runs on it unchanged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import LeantuneError
from ..tasks.registry import Task, register_provider

NUM_CLUSTERS = 16
WORDS_PER_CLUSTER = 24
CLUSTERS_PER_CLASS = 2
LABEL_WORDS = ("red", "blue", "green", "gold", "pink", "gray", "teal", "plum", "rust", "jade", "navy", "lime",
               "ruby", "sand", "mint", "onyx")
TEMPLATE = "{x}"  # "w0307 red": the label directly follows its input (a 2-hop induction circuit suffices)
SPECIAL = ("<pad>", "<s>", "<unk>", "=")


def word(cluster: int, j: int) -> str:
    return f"w{cluster:02d}{j:02d}"


def vocabulary() -> list[str]:
    return list(SPECIAL) + [word(c, j) for c in range(NUM_CLUSTERS) for j in range(WORDS_PER_CLUSTER)] + \
        list(LABEL_WORDS)


@dataclass(frozen=True)
class Assignment:
    clusters: tuple[tuple[int, ...], tuple[int, ...]]  # clusters of class 0, clusters of class 1
    labels: tuple[str, str]  # label word of class 0, of class 1

    def combo(self) -> tuple:
        return (tuple(sorted(tuple(sorted(c)) for c in self.clusters)), tuple(sorted(self.labels)))

    def held_out(self) -> bool:
        """About one assignment in five is reserved for evaluation (never trained on)."""
        clusters, (l0, l1) = self.combo()
        h = sum((i + 1) * (7 * c + 3) for i, c in enumerate(clusters[0] + clusters[1]))
        return (h + LABEL_WORDS.index(l0) + 5 * LABEL_WORDS.index(l1)) % 5 == 0


def draw_assignment(rng: random.Random, held_out: bool) -> Assignment:
    while True:
        cs = rng.sample(range(NUM_CLUSTERS), 2 * CLUSTERS_PER_CLASS)
        a = Assignment((tuple(cs[:CLUSTERS_PER_CLASS]), tuple(cs[CLUSTERS_PER_CLASS:])),
                       tuple(rng.sample(LABEL_WORDS, 2)))
        if a.held_out() == held_out:
            return a


def lab_task(instance: int) -> Task:
    """Task instance ``instance`` (a held-out assignment): every word of both clusters, labelled.

    Splits (disjoint words, half of each cluster for train): per class ``train`` 24 words
    (demonstrations are drawn from it), ``validation`` 12, ``test`` 12.
    """
    rng = random.Random(10_000 + instance)
    a = draw_assignment(rng, held_out=True)
    splits = {"train": [], "validation": [], "test": []}
    half = WORDS_PER_CLUSTER // 2
    for label, clusters in enumerate(a.clusters):
        for cluster in clusters:
            words = [word(cluster, j) for j in range(WORDS_PER_CLUSTER)]
            rng.shuffle(words)
            for split, chunk in (("train", words[:half]), ("validation", words[half:half + half // 2]),
                                 ("test", words[half + half // 2:])):
                splits[split] += [{"x": w, "label": label} for w in chunk]
    for rows in splits.values():
        rng.shuffle(rows)
    from ..tasks.registry import LocalSplit

    local = {s: LocalSplit(f"<lab instance {instance}>", lambda _p, rows=rows: [dict(r) for r in rows],
                           lambda r: r) for s, rows in splits.items()}
    return Task(f"lab:{instance}", labels=("class0", "class1"), text_fields=("x",), template=TEMPLATE,
                label_words=a.labels, local=local)


def training_sequence(rng: random.Random, max_items: int = 16, min_items: int | None = None,
                      copy_fraction: float = 0.5) -> tuple[list[str], list[int]]:
    """Words of one training sequence and the indices (into the words) of its label tokens.

    ``x = label`` items of a fresh training assignment, each a word of a random class; every label
    after the first item is a prediction target (early ones are guesses by construction). A
    ``copy_fraction`` of the sequences draw their words from a few "active" words per cluster, so exact
    repeats are common (copying is learned fast); the others draw from whole clusters, so repeats are
    rare and the label has to come from a *different* word of the same cluster (what evaluation asks).
    """
    a = draw_assignment(rng, held_out=False)
    n = rng.randint(min_items if min_items is not None else max(4, max_items // 4), max_items)
    few = rng.random() < copy_fraction
    pool = {c: ([rng.randrange(WORDS_PER_CLUSTER) for _ in range(rng.randint(1, 3))] if few
                else list(range(WORDS_PER_CLUSTER))) for cs in a.clusters for c in cs}
    words, targets = ["<s>"], []
    for _ in range(n):
        cls = rng.randrange(2)
        cluster = rng.choice(a.clusters[cls])
        words.append(word(cluster, rng.choice(pool[cluster])))
        targets.append(len(words))
        words.append(a.labels[cls])
    return words, targets


def _provide(name: str) -> Task:
    """``lab:N`` (``lab`` = ``lab:0``): held-out instance N of the family."""
    try:
        return lab_task(int(name.split(":", 1)[1]) if ":" in name else 0)
    except ValueError:
        raise LeantuneError(f"unknown task '{name}'; lab tasks are lab:N with N an integer") from None


register_provider("lab", _provide)
