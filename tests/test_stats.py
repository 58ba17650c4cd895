"""The statistics of every result, checked on fixed vectors against independent computations."""

from __future__ import annotations

import math

import pytest

from leantune.stats import (balanced_accuracy, confusion_matrix, describe_change, evaluation_stats, macro_f1,
                            mcnemar_exact, one_sided_p, paired_change, wilson_interval)

GOLD = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PRED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2]


def test_confusion_and_rates_by_hand():
    assert confusion_matrix(GOLD, PRED) == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    # recalls 2/4, 2/3, 3/3 -> mean
    assert balanced_accuracy(GOLD, PRED) == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    # per class F1 = 2 tp / (gold + pred): class 0: 4/(4+3), class 1: 4/(3+3), class 2: 6/(3+4)
    assert macro_f1(GOLD, PRED) == pytest.approx((4 / 7 + 4 / 6 + 6 / 7) / 3)
    st = evaluation_stats(GOLD, PRED, ["a", "b", "c"])
    assert st["accuracy"] == 0.7 and st["majority_label"] == "a" and st["majority_rate"] == 0.4
    assert st["top_prediction"] == "c" and st["top_prediction_share"] == 0.4
    assert st["per_class_recall"] == {"a": 0.5, "b": pytest.approx(2 / 3), "c": 1.0}


def test_against_scikit_learn_definitions():
    """Balanced accuracy over classes present in gold; macro-F1 over classes in gold or predictions."""
    gold, pred = [0, 0, 1, 1], [0, 2, 1, 1]  # class 2 predicted, never gold
    assert balanced_accuracy(gold, pred) == pytest.approx((0.5 + 1.0) / 2)
    assert macro_f1(gold, pred) == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_constant_predictor_is_chance_in_balanced_accuracy():
    gold = [0] * 70 + [1] * 30
    assert balanced_accuracy(gold, [0] * 100) == 0.5 and balanced_accuracy(gold, [1] * 100) == 0.5


def _binom_two_sided_by_pmf(k, n):
    """An independent two-sided exact binomial test (scipy's rule: sum every outcome no likelier than k)."""
    pmf = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    return min(1.0, sum(p for p in pmf if p <= pmf[k] * (1 + 1e-7)))


@pytest.mark.parametrize("gained,lost", [(36, 23), (10, 0), (0, 0), (5, 5), (1, 9), (60, 20)])
def test_mcnemar_exact_is_a_binomial_test_on_discordant_pairs(gained, lost):
    assert mcnemar_exact(gained, lost) == pytest.approx(_binom_two_sided_by_pmf(gained, gained + lost))


def test_mcnemar_matches_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats", reason="scipy is only an optional cross-check")
    for g, l in [(36, 23), (3, 12), (50, 49)]:
        assert mcnemar_exact(g, l) == pytest.approx(stats.binomtest(g, g + l, 0.5).pvalue)
        assert one_sided_p(g, l) == pytest.approx(stats.binomtest(g, g + l, 0.5, alternative="greater").pvalue)


def test_paired_change_counts_and_bootstrap_is_seeded():
    gold = [i % 2 for i in range(200)]
    before = [1] * 200  # a constant predictor
    after = [g if i % 5 else 1 - g for i, g in enumerate(gold)]  # right on 80 %
    ch = paired_change(gold, before, after, seed=3)
    gained = sum(a == g and b != g for g, a, b in zip(gold, after, before))
    lost = sum(b == g and a != g for g, a, b in zip(gold, after, before))
    assert (ch["gained"], ch["lost"]) == (gained, lost)
    assert ch["accuracy_change"] == pytest.approx(0.8 - 0.5)
    assert ch == paired_change(gold, before, after, seed=3)  # reproducible
    assert ch["accuracy_change_ci95"] != paired_change(gold, before, after, seed=4)["accuracy_change_ci95"]
    lo, hi = ch["accuracy_change_ci95"]
    assert lo < 0.3 < hi and lo > 0.15 and hi < 0.45  # around the true change, and not absurdly wide
    blo, bhi = ch["balanced_accuracy_change_ci95"]
    assert blo < ch["balanced_accuracy_change"] < bhi


def test_identical_predictions_have_a_zero_interval_and_p_one():
    gold, pred = [0, 1, 1, 0, 1], [0, 1, 0, 0, 0]
    ch = paired_change(gold, pred, pred)
    assert ch["mcnemar_p"] == 1.0 and ch["accuracy_change_ci95"] == [0.0, 0.0]


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(81, 100)  # textbook: 0.722 .. 0.874
    assert lo == pytest.approx(0.7222, abs=1e-3) and hi == pytest.approx(0.8741, abs=1e-3)


def test_describe_change_reads_like_the_issue_example():
    gold = [1] * 107 + [0] * 93
    before = [1] * 200
    after = [1] * 100 + [0] * 7 + [0] * 93
    b, a = evaluation_stats(gold, before), evaluation_stats(gold, after)
    line = describe_change("test", b, a, paired_change(gold, before, after))
    assert line.startswith("test 0.535 -> 0.965 (+43.0 pts, 95% CI [")
    assert "McNemar p < 0.0001, n = 200; constant predictor 0.535)" in line
