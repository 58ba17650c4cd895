"""The SVD search engine: evaluate candidate edits on validation, journaled, resumable, shardable.

Each candidate is a list of :class:`Edit` (one for paper/grid, the kept ones plus one for greedy).
The evaluator follows :class:`leantune.icl.evaluator.Evaluator` (ICL accuracy, a classifier's, or
several pooled). Where it offers layer reuse (ICL: scoring from a recorded layer), a candidate whose
shallowest edit is at layer l runs only layers l..L; otherwise every candidate is evaluated in full.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from ..arch import ArchMap
from ..icl.evaluator import EvalResult, Evaluator, LayerReuse
from ..stats import METRICS
from .edits import Edit, edited
from .journal import Journal
from .lowrank import SVDCache
from .strategies import BASELINE, Outcome, Strategy, candidate_key, make_strategy, tie_key

__all__ = ["BASELINE", "Dist", "Search", "SearchState", "candidate_key"]


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    def mine(self, i: int) -> bool:
        return i % self.world == self.rank

    def gather(self, recs: dict) -> dict:
        if self.world == 1:
            return recs
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, recs)
        merged = {}
        for p in parts:
            merged.update(p)
        return merged


@dataclass
class SearchState:
    results: dict[str, dict] = field(default_factory=dict)  # key -> journal record
    evaluated_now: int = 0
    tokens: int = 0
    seconds: float = 0.0


class Search:
    def __init__(self, model, arch: ArchMap, evaluator: Evaluator, cache: SVDCache, journal: Journal, modules: list[str],
                 dist: Dist | None = None, progress: bool = True, reuse_memory: int | None = None,
                 reuse_overflow: str = "auto", select: str = "accuracy"):
        self.model, self.arch, self.evaluator, self.cache = model, arch, evaluator, cache
        self.select = select  # the metric that ranks candidates (leantune.stats.METRICS), from val predictions
        self.reuse_memory, self.reuse_overflow = reuse_memory, reuse_overflow  # see Evaluator.layer_reuse
        self.journal, self.modules = journal, modules
        self.dist = dist or Dist()
        self.progress = progress
        self.state = SearchState(results=journal.read_all())
        self.reuse: LayerReuse | None = None  # set by prepare_reuse where the evaluator offers it

    # --- evaluation of one candidate -------------------------------------------------------
    def prepare_reuse(self, layers: set[int]) -> None:
        """Before the candidates at ``layers``: let the evaluator record the unedited model once (if it can)."""
        self.reuse = self.evaluator.layer_reuse(self.model, self.arch, layers, self.reuse_memory, self.reuse_overflow,
                                                progress=self.progress and self.dist.rank == 0)

    def _evaluate_edited(self, live: list[Edit]) -> EvalResult:
        if self.reuse is None:
            return self.evaluator.evaluate(self.model)
        if not live:
            return self.reuse.baseline  # the unedited model, evaluated while recording
        return self.reuse.evaluate_from(min(e.layer for e in live))  # layers below the shallowest edit: recorded

    def _evaluate(self, edits: list[Edit]) -> dict:
        t0 = time.perf_counter()
        live = [e for e in edits if e.rate > 0]
        with edited(self.arch, live, self.cache):
            res = self._evaluate_edited(live)
        m = res.metrics
        rec = {"key": candidate_key(edits), "edits": [asdict(e) for e in live], "val_accuracy": m["accuracy"],
               "val_correct": m["correct"], "n_val": m["n"], "tokens_processed": m["tokens_processed"],
               "seconds": time.perf_counter() - t0, "val_predictions": [p["pred"] for p in res.predictions]}
        if "acc_norm" in m:
            rec["val_acc_norm"] = m["acc_norm"]
        return rec

    def run_candidates(self, candidates: list[list[Edit]], bar=None) -> dict[str, dict]:
        """Evaluate (this rank's share of) ``candidates`` not yet journaled; return all their records."""
        mine = {}
        for i, edits in enumerate(candidates):
            key = candidate_key(edits)
            if key in mine:
                continue  # rate 0 of every (layer, module) is the one baseline: counted once
            if key in self.state.results:
                rec = self.state.results[key]
            elif not self.dist.mine(i):
                continue
            else:
                rec = self._evaluate(edits)
                self.journal.append(rec)
                self.state.evaluated_now += 1
                self.state.tokens += rec["tokens_processed"]
                self.state.seconds += rec["seconds"]
            mine[key] = rec
            if bar is not None:
                bar.update(1)
        merged = self.dist.gather(mine)
        self.state.results.update(merged)
        return {candidate_key(c): self.state.results[candidate_key(c)] for c in candidates}

    def score(self, record: dict) -> float:
        """The selection metric of a journaled candidate. Accuracy is stored; the others are recomputed from
        its validation predictions, so a journal can be re-ranked by any metric without evaluating again."""
        if self.select == "accuracy":
            return record["val_accuracy"]
        return METRICS[self.select](self.evaluator.gold, record["val_predictions"])

    def best(self, candidates: list[list[Edit]]) -> list[Edit]:
        def key(c):
            return tie_key([e for e in c if e.rate > 0], self.score(self.state.results[candidate_key(c)]),
                           self.modules)
        return max(candidates, key=key)

    # --- strategies (svd/strategies/: one class per strategy) -----------------------------------------
    def run(self, strategy: Strategy | str, layers: list[int], rates: list[float], **options) -> Outcome:
        """Run a strategy (an instance, or a registered name given its ``options``, e.g. ``top_k``)."""
        if isinstance(strategy, str):
            strategy = make_strategy(strategy, **options)
        return strategy.run(self, layers, rates)

    def grid(self, layers, rates) -> tuple[list[Edit], list[list[Edit]]]:
        o = self.run("grid", layers, rates)
        return o.chosen, o.candidates

    def paper(self, layers, rates, top_k: int) -> tuple[list[Edit], list[list[Edit]], dict]:
        o = self.run("paper", layers, rates, top_k=top_k)
        return o.chosen, o.candidates, o.info

    def greedy(self, layers, rates) -> tuple[list[Edit], list[list[Edit]]]:
        o = self.run("greedy", layers, rates)
        return o.chosen, o.candidates

    def bar(self, candidates: list[list[Edit]] | int):
        """The candidates phase's progress: one step per distinct candidate (all rates 0 are one baseline)."""
        from tqdm.auto import tqdm

        total = candidates if isinstance(candidates, int) else len({candidate_key(c) for c in candidates})
        return tqdm(total=total, desc="candidates", unit="cand", disable=not self.progress or self.dist.rank != 0)
