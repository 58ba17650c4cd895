"""The selection rule: given the strategy's winner, decide which edit (if any) the search adopts.

A strategy proposes candidates and names a winner by the validation metric (``--select``); this module
decides whether to adopt it. Either side changes without touching the other.

* ``guard="off"``: the SVD paper's plain selection -- the winner is adopted, whatever it is.
* ``guard="on"`` (default): the winner is adopted only if
  1. on a confirmation split (examples the search never saw: not demonstrations, validation or test) it
     beats the unedited model in one paired comparison: the one-sided exact binomial test on the examples
     whose correctness changed, at ``confirm_alpha``, with a positive change of the selection metric; and
  2. it is not a label-shift: its gain holds in balanced accuracy, and it does not answer one label for
     nearly every example (``SHIFT_SHARE``) when the gold labels are not that skewed.
  Otherwise the search adopts no edit and records why, with the unconfirmed winner beside it.

Why: the best of ~57 candidates on 100 validation examples is partly luck (winner's curse), and on tasks
where a model answers one label for everything, an edit that only moves that bias scores like a gain.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LeantuneError
from ..stats import METRICS, evaluation_stats, one_sided_p, paired_change

GUARDS = ("on", "off")
SHIFT_SHARE = 0.95  # "answers one label for nearly every example"
SHIFT_MARGIN = 0.05  # ... unless the gold labels themselves are that skewed (top share <= majority rate + margin)


@dataclass(frozen=True)
class SelectionRule:
    """How a search decides: ``guard`` on | off, ``metric`` ranking the candidates, ``confirm_alpha`` and
    ``n_confirm`` (a count, or ``"auto"``: up to 200 train examples left after demonstrations and validation)."""

    guard: str = "on"
    metric: str = "accuracy"
    confirm_alpha: float = 0.05
    n_confirm: int | str = "auto"

    def check(self) -> "SelectionRule":
        if self.guard not in GUARDS:
            raise LeantuneError(f"--guard must be on or off, not {self.guard!r}")
        if self.metric not in METRICS:
            raise LeantuneError(f"--select must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if not 0 < self.confirm_alpha < 1:
            raise LeantuneError(f"--confirm-alpha must be in (0, 1), not {self.confirm_alpha}")
        n = self.n_confirm
        if not (n == "auto" or (isinstance(n, int) and not isinstance(n, bool) and n >= 0)):
            raise LeantuneError(f"--n-confirm must be a count >= 0 or auto, not {n!r}")
        return self


def label_shift(gold: list[int], before: list[int], after: list[int], names=None) -> dict:
    """Does ``after``'s difference from ``before`` look like a move of the label prior rather than learning?"""
    b, a = evaluation_stats(gold, before, names), evaluation_stats(gold, after, names)
    reasons = []
    if a["accuracy"] > b["accuracy"] and a["balanced_accuracy"] <= b["balanced_accuracy"]:
        reasons.append(f"accuracy rises ({b['accuracy']:.3f} -> {a['accuracy']:.3f}) but balanced accuracy does not "
                       f"({b['balanced_accuracy']:.3f} -> {a['balanced_accuracy']:.3f})")
    if a["top_prediction_share"] >= SHIFT_SHARE and a["top_prediction_share"] > a["majority_rate"] + SHIFT_MARGIN:
        reasons.append(f"it answers '{a['top_prediction']}' for {a['top_prediction_share']:.0%} of the examples "
                       f"(gold majority rate {a['majority_rate']:.0%})")
    return {"flagged": bool(reasons), "reasons": reasons}


def confirm(gold: list[int], before: list[int], after: list[int], rule: SelectionRule, seed: int = 0) -> dict:
    """The winner vs the unedited model on the confirmation split: one paired, one-sided comparison."""
    change = paired_change(gold, before, after, seed=seed)
    metric_change = METRICS[rule.metric](gold, after) - METRICS[rule.metric](gold, before)
    p = one_sided_p(change["gained"], change["lost"])
    return {"n": len(gold), "alpha": rule.confirm_alpha, "metric": rule.metric, "metric_change": metric_change,
            "p_one_sided": p, "confirmed": p < rule.confirm_alpha and metric_change > 0, "change": change}


def decide(rule: SelectionRule, winner_is_baseline: bool, shift: dict | None, confirmation: dict | None) -> tuple[bool, str]:
    """(adopt the winner?, why) -- the reason is the sentence the printed result and summary.json carry."""
    if winner_is_baseline:
        return False, f"no candidate beat the unedited model on validation {rule.metric}"
    if rule.guard == "off":
        return True, "plain selection (--guard off): the best validation candidate is adopted, as in the paper"
    if shift and shift["flagged"]:
        return False, "the winner looks like a label-prior shift: " + "; ".join(shift["reasons"])
    if confirmation is None:
        return False, "no confirmation split to check the winner on (--n-confirm 0); use --guard off to adopt it"
    if not confirmation["confirmed"]:
        c = confirmation["change"]
        counts = f"{confirmation['n']} held-out examples ({c['gained']} gained, {c['lost']} lost"
        if confirmation["p_one_sided"] < rule.confirm_alpha:  # more examples fixed than broken, yet the metric fell
            return False, (f"not confirmed on {counts}, one-sided p = {confirmation['p_one_sided']:.2g}, but "
                           f"{rule.metric} changes {100 * confirmation['metric_change']:+.1f} pts)")
        return False, (f"not confirmed on {counts}, one-sided p = {confirmation['p_one_sided']:.2g} >= "
                       f"{rule.confirm_alpha:g}, {rule.metric} change {100 * confirmation['metric_change']:+.1f} pts)")
    c = confirmation["change"]
    return True, (f"confirmed on {confirmation['n']} held-out examples ({c['gained']} gained, {c['lost']} lost, "
                  f"one-sided p = {confirmation['p_one_sided']:.2g} < {rule.confirm_alpha:g})")
