"""Statistics of a result: pure functions over gold labels and predictions (no model, no torch).

Why they exist: a search that takes the best of ~57 candidates on 100 validation examples reports noise and
label-prior shifts as gains unless every number comes with its uncertainty and its constant-predictor baseline.

* :func:`evaluation_stats` -- one evaluation: confusion matrix (gold x predicted counts), accuracy, balanced
  accuracy (mean per-class recall over the classes present in gold, as scikit-learn's
  ``balanced_accuracy_score``), macro-F1 (over the classes present in gold or predictions, as scikit-learn's
  ``f1_score(average="macro")``), the majority-class rate (what always answering the most frequent gold label
  scores) and the share of the most frequent prediction.
* :func:`paired_change` -- one change on the same examples (edited vs unedited): gained and lost examples,
  McNemar's exact p-value (a two-sided binomial test on the discordant pairs), and seeded paired-bootstrap
  95 % intervals of the accuracy and balanced-accuracy changes.
* :func:`one_sided_p` -- the confirmation test of a guarded selection: P(at least ``gained`` of the
  discordant pairs favour the edit | no effect).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000  # enough for a stable 95 % percentile interval (its ends move < 0.5 pt between seeds)


def _classes(gold: Sequence[int], pred: Sequence[int], num_classes: int | None) -> int:
    seen = max([*gold, *pred], default=-1) + 1
    return max(seen, num_classes or 0)


def confusion_matrix(gold: Sequence[int], pred: Sequence[int], num_classes: int | None = None) -> list[list[int]]:
    """``m[g][p]`` = how many examples of gold class g were predicted as p."""
    k = _classes(gold, pred, num_classes)
    m = [[0] * k for _ in range(k)]
    for g, p in zip(gold, pred):
        m[g][p] += 1
    return m


def _recalls(m: list[list[int]]) -> list[float]:
    return [row[i] / sum(row) for i, row in enumerate(m) if sum(row)]


def balanced_accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    recalls = _recalls(confusion_matrix(gold, pred))
    return sum(recalls) / len(recalls) if recalls else 0.0


def macro_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    m = confusion_matrix(gold, pred)
    f1s = []
    for c in range(len(m)):
        tp = m[c][c]
        n_gold, n_pred = sum(m[c]), sum(row[c] for row in m)
        if n_gold == 0 and n_pred == 0:
            continue  # a class nobody mentions does not count (scikit-learn's labels = union of both)
        f1s.append(2 * tp / (n_gold + n_pred))
    return sum(f1s) / len(f1s) if f1s else 0.0


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    return sum(int(g == p) for g, p in zip(gold, pred)) / len(gold) if len(gold) else 0.0


METRICS = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1}


def evaluation_stats(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str] | None = None) -> dict:
    """Everything one evaluation says about itself. ``labels``: class names (index = label id)."""
    gold, pred = list(gold), list(pred)
    n = len(gold)
    k = _classes(gold, pred, len(labels) if labels else None)
    names = list(labels) if labels and len(labels) >= k else [str(i) for i in range(k)]
    m = confusion_matrix(gold, pred, k)
    gold_counts, pred_counts = Counter(gold), Counter(pred)
    majority, majority_n = max(gold_counts.items(), key=lambda kv: (kv[1], -kv[0])) if n else (0, 0)
    top_pred, top_pred_n = max(pred_counts.items(), key=lambda kv: (kv[1], -kv[0])) if n else (0, 0)
    return {
        "n": n, "accuracy": accuracy(gold, pred), "balanced_accuracy": balanced_accuracy(gold, pred),
        "macro_f1": macro_f1(gold, pred), "labels": names, "confusion": m,
        "per_class_recall": {names[i]: (row[i] / sum(row) if sum(row) else None) for i, row in enumerate(m)},
        "majority_label": names[majority], "majority_rate": majority_n / n if n else 0.0,
        "top_prediction": names[top_pred], "top_prediction_share": top_pred_n / n if n else 0.0,
    }


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> list[float]:
    """Wilson score 95 % interval of an accuracy (better than +-1.96 SE near 0 or 1 and at small n)."""
    if n == 0:
        return [0.0, 1.0]
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial test of k successes in n trials at p = 1/2 (the symmetric tails doubled)."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_exact(gained: int, lost: int) -> float:
    """McNemar's exact test: only the discordant pairs carry information; under no effect each is a coin flip."""
    return binomial_two_sided(gained, gained + lost)


def one_sided_p(gained: int, lost: int) -> float:
    """P(X >= gained), X ~ Binomial(gained + lost, 1/2): is the edit better, not merely different?"""
    n = gained + lost
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(gained, n + 1)) / 2 ** n


def _bootstrap_balanced(gold: np.ndarray, correct: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Balanced accuracy of every resample (rows of ``idx``), over the classes present in each."""
    g, c = gold[idx], correct[idx]
    recalls = []
    for cls in np.unique(gold):
        in_cls = g == cls
        n_cls = in_cls.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(n_cls > 0, (c & in_cls).sum(1) / np.maximum(n_cls, 1), np.nan))
    return np.nanmean(np.stack(recalls), 0)


def paired_change(gold: Sequence[int], before: Sequence[int], after: Sequence[int], seed: int = 0,
                  samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Edited (``after``) vs unedited (``before``) predictions on the same examples.

    The bootstrap resamples examples (with replacement, ``seed``-ed ``numpy`` generator) and keeps each
    example's pair of predictions together, so the interval reflects the paired design."""
    gold_a, b_a, a_a = (np.asarray(x, dtype=np.int64) for x in (gold, before, after))
    n = len(gold_a)
    cb, ca = b_a == gold_a, a_a == gold_a
    gained, lost = int((ca & ~cb).sum()), int((cb & ~ca).sum())
    out = {"n": n, "gained": gained, "lost": lost, "mcnemar_p": mcnemar_exact(gained, lost),
           "accuracy_change": float(ca.mean() - cb.mean()) if n else 0.0,
           "balanced_accuracy_change": balanced_accuracy(gold, after) - balanced_accuracy(gold, before),
           "bootstrap": {"samples": samples, "seed": seed}}
    if n == 0:
        return {**out, "accuracy_change_ci95": [0.0, 0.0], "balanced_accuracy_change_ci95": [0.0, 0.0]}
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    d_acc = ca[idx].mean(1) - cb[idx].mean(1)
    d_bal = _bootstrap_balanced(gold_a, ca, idx) - _bootstrap_balanced(gold_a, cb, idx)
    out["accuracy_change_ci95"] = [float(np.percentile(d_acc, 2.5)), float(np.percentile(d_acc, 97.5))]
    out["balanced_accuracy_change_ci95"] = [float(np.percentile(d_bal, 2.5)), float(np.percentile(d_bal, 97.5))]
    return out


def format_p(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"= {p:.2g}" if p < 0.01 else f"= {p:.2f}"


def describe_change(name: str, before: dict, after: dict, change: dict) -> str:
    """One line a person can read, e.g. ``test 0.750 -> 0.815 (+6.5 pts, 95% CI [-0.5, +13.5], McNemar p = 0.12,
    n = 200; constant predictor 0.535)``; ``before``/``after`` are :func:`evaluation_stats` results."""
    lo, hi = (100 * x for x in change["accuracy_change_ci95"])
    return (f"{name} {before['accuracy']:.3f} -> {after['accuracy']:.3f} ({100 * change['accuracy_change']:+.1f} pts, "
            f"95% CI [{lo:+.1f}, {hi:+.1f}], McNemar p {format_p(change['mcnemar_p'])}, n = {change['n']}; "
            f"constant predictor {before['majority_rate']:.3f})")
