"""Evaluators: model -> metrics on a fixed set of examples.

The protocol (:class:`Evaluator`) is what the SVD search asks of an evaluator, so it runs on ICL
accuracy of a causal LM (:class:`ICLEvaluator`), on the accuracy of a sequence classifier such as a
fine-tuned MiniLM (:class:`ClassifierEvaluator`), or on several evaluators pooled
(:class:`PooledEvaluator`) alike:

* ``evaluate(model) -> EvalResult`` with the metrics ``accuracy``, ``correct``, ``n`` and
  ``tokens_processed``, and one prediction record (``pred``) per example;
* ``layer_reuse(model, arch, layers, ...) -> LayerReuse | None``: the evaluation of models that differ
  from ``model`` (as it is now) only in layers >= l, one of ``layers``, computing only those layers
  (:class:`LayerReuse`); ``None`` where the evaluator cannot (``reuses_layers`` False), and the search
  then evaluates in full;
* for the search's dry run, which runs no model: ``tokens_per_evaluation`` and
  ``estimate_memory(model, arch, recorded_layers, ...)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..errors import LeantuneError
from ..precision import check_finite_scores, model_dtype
from ..stats import evaluation_stats
from ..tasks import Task
from .layer_reuse import LayerReuseScorer, estimate_memory, hidden_size
from .scoring import Plan, Scores, prepare, score

CONTENT_FREE = "N/A"  # Zhao et al. 2021's content-free input
SEPARATOR = "\n\n"  # between demonstrations, and between the last demonstration and the query


@dataclass
class EvalResult:
    metrics: dict
    predictions: list[dict] = field(default_factory=list)


class LayerReuse(Protocol):
    """Evaluations of a model that changes only in layers >= l after it was recorded (an SVD edit at l)."""

    baseline: EvalResult  # the evaluation of the model as recorded (unedited)

    def evaluate_from(self, layer: int, progress: bool = False) -> EvalResult:
        """The evaluation of the model as it is now, which must equal the recorded one below ``layer``
        (one of the layers given to ``layer_reuse``); the same result as ``evaluate(model)``."""
        ...

    def memory(self) -> dict:
        """What the recorded states take (bytes on the model's devices and on the CPU, recorded layers)."""
        ...


class Evaluator(Protocol):
    reuses_layers: bool  # whether layer_reuse returns a LayerReuse (the dry run's estimate needs to know)

    @property
    def tokens_per_evaluation(self) -> int:
        """Tokens one full evaluation processes."""
        ...

    def evaluate(self, model, progress: bool = False, desc: str = "icl eval") -> EvalResult:
        """``desc`` labels the progress bar (baseline, test, confirmation, ...)."""
        ...

    def estimate_memory(self, model, arch, recorded_layers: int, memory_budget: int | None = None,
                        overflow: str = "auto") -> dict:
        """Expected bytes of one evaluation (``kv_caches``, ``activations``) and of the states recorded for
        layer reuse at ``recorded_layers`` layers (``recorded_states``, 0 where there is no reuse)."""
        ...

    def layer_reuse(self, model, arch, layers: set[int], memory_budget: int | None = None,
                    overflow: str = "auto", progress: bool = False) -> LayerReuse | None:
        """Record what the evaluation of ``model`` (unedited) needs to start from any of ``layers``;
        ``None`` if this evaluator cannot. ``memory_budget`` (bytes) / ``overflow`` (auto | cpu |
        recompute) bound the recorded states kept on the model's devices, never changing results."""
        ...


def per_class(task: Task, labels: list[int], preds: list[int]) -> dict:
    out = {name: {"n": 0, "correct": 0, "predicted": 0} for name in task.labels}
    for y, p in zip(labels, preds):
        out[task.labels[y]]["n"] += 1
        out[task.labels[y]]["correct"] += int(y == p)
        out[task.labels[p]]["predicted"] += 1
    return out


def with_stats(metrics: dict, labels: list[int], preds: list[int], names) -> dict:
    """``metrics`` plus the per-evaluation statistics (:func:`leantune.stats.evaluation_stats`): balanced
    accuracy, macro-F1, confusion matrix, majority-class rate, share of the most frequent prediction and a
    Wilson 95 % interval of the accuracy. New keys only: readers of the old ones are unaffected."""
    from ..stats import wilson_interval

    st = evaluation_stats(labels, preds, names)
    st.pop("n"), st.pop("accuracy")  # already there, same values
    return {**metrics, **st, "accuracy_ci95": wilson_interval(metrics["correct"], metrics["n"])}


def accuracy_metrics(task: Task, labels: list[int], preds: list[int], tokens: int, t0: float) -> dict:
    """The metrics of one evaluation (every evaluator's, and the calibration control's)."""
    n = len(labels)
    correct = sum(int(p == y) for p, y in zip(preds, labels))
    return with_stats({"accuracy": correct / n, "n": n, "correct": correct,
                       "per_class": per_class(task, labels, preds), "tokens_processed": tokens,
                       "seconds": time.perf_counter() - t0}, labels, preds, task.labels)


class LabelledExamples:
    """What the selection rule asks of an evaluator over ``self.examples`` of ``self.task``."""

    @property
    def gold(self) -> list[int]:
        """The gold label of every evaluated example, in prediction order."""
        return [r["label"] for r in self.examples]

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.task.labels


def check_label_words(task: Task) -> None:
    if task.kind == "classification":
        if len(task.label_words) != len(task.labels):
            raise LeantuneError(f"task {task.name}: {len(task.label_words)} label words for {len(task.labels)} labels")
        for w in task.label_words:
            if not str(w).strip():
                raise LeantuneError(f"task {task.name}: label word {w!r} tokenizes to nothing; give a real word")


def build_prefix(task: Task, demos: list[dict]) -> str:
    parts = [task.render_context(d) + task.continuations(d)[d["label"]] for d in demos]
    return SEPARATOR.join(parts) + SEPARATOR if parts else ""


class ICLEvaluator(LabelledExamples):
    """Accuracy of a causal LM at picking the right continuation after fixed demonstrations."""

    def __init__(self, tokenizer, task: Task, demos: list[dict], examples: list[dict], calibrate: bool = False,
                 batch_size: int = 16):
        check_label_words(task)
        if not examples:
            raise LeantuneError(f"task {task.name}: no examples to evaluate")
        self.task, self.examples, self.batch_size = task, examples, batch_size
        self.prefix = build_prefix(task, demos)
        contexts = [task.render_context(r) for r in examples]
        choices = [task.continuations(r) for r in examples]
        self.plan: Plan = prepare(tokenizer, self.prefix, contexts, choices)
        self.calibration_plan: Plan | None = None
        if calibrate:
            if task.kind != "classification":
                raise LeantuneError("--calibrate applies to classification tasks, not multiple choice")
            self.calibration_plan = self._content_free_plan(tokenizer)

    reuses_layers = True

    def _content_free_plan(self, tokenizer) -> Plan:
        """The demonstrations followed by the content-free input ``N/A`` in every field (Zhao et al. 2021)."""
        blank = {k: CONTENT_FREE for k in self.examples[0] if k not in ("label", "idx")}
        return prepare(tokenizer, self.prefix, [self.task.render_context(blank)], [self.task.continuations(blank)])

    @staticmethod
    def _content_free_prior(model, plan: Plan) -> tuple[torch.Tensor, int]:
        """(log-probabilities of the answers after the content-free prompt, tokens it took)."""
        cal = score(model, plan, 1)
        check_finite_scores(cal.logprobs, model)
        return torch.log_softmax(torch.tensor(cal.logprobs[0]), 0), cal.tokens_processed

    def calibration_control(self, model, tokenizer, result: EvalResult) -> EvalResult | None:
        """The same evaluation with contextual calibration, from ``result``'s log-probs (an uncalibrated
        evaluation of ``model`` as it is now): only the content-free prompt is scored. None where calibration
        does not apply (multiple choice, or this evaluator already calibrates)."""
        if self.task.kind != "classification" or self.calibration_plan is not None:
            return None
        t0 = time.perf_counter()
        cf, tokens = self._content_free_prior(model, self._content_free_plan(tokenizer))
        preds = [int((torch.log_softmax(torch.tensor(p["logprobs"]), 0) - cf).argmax()) for p in result.predictions]
        records = [{**p, "pred": q, "correct": q == p["label"]} for p, q in zip(result.predictions, preds)]
        metrics = accuracy_metrics(self.task, self.gold, preds, tokens, t0)
        metrics["content_free_probs"] = [math.exp(v) for v in cf.tolist()]
        return EvalResult(metrics, records)

    @property
    def num_rows(self) -> int:
        return len(self.plan.rows)

    @property
    def tokens_per_evaluation(self) -> int:
        p = len(self.plan.prefix_ids)  # the demonstrations once, then each row's own tokens
        return p + sum(len(r) - p for r in self.plan.rows)

    def estimate_memory(self, model, arch, recorded_layers: int, memory_budget: int | None = None,
                        overflow: str = "auto") -> dict:
        return estimate_memory(model, arch, self.plan, self.batch_size, recorded_layers, memory_budget, overflow)

    def evaluate(self, model, progress: bool = False, desc: str = "icl eval") -> EvalResult:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        with tqdm(total=self.num_rows, desc=desc, unit="row", disable=not progress, leave=False) as bar:
            scores = score(model, self.plan, self.batch_size, progress=bar)
        return self.result(model, scores, t0)

    def layer_reuse(self, model, arch, layers: set[int], memory_budget: int | None = None,
                    overflow: str = "auto", progress: bool = False) -> "ICLLayerReuse":
        """Scoring from a recorded layer (:mod:`leantune.icl.layer_reuse`); runs the unedited model once."""
        return ICLLayerReuse(self, model, arch, layers, memory_budget, overflow, progress)

    def result(self, model, scores: Scores, t0: float) -> EvalResult:
        """Metrics and predictions from the scores of :attr:`plan` on ``model`` (``t0``: when scoring began).

        The calibration prompt (one row) is always scored in full on ``model`` as it is now."""
        check_finite_scores(scores.logprobs, model)  # a float16 overflow is an error, never a NaN accuracy
        tokens = scores.tokens_processed
        cf = None
        if self.calibration_plan is not None:
            cf, cf_tokens = self._content_free_prior(model, self.calibration_plan)
            tokens += cf_tokens
        labels = self.gold
        preds, preds_raw, preds_norm, records = [], [], [], []
        for r, lp, ln in zip(self.examples, scores.logprobs, scores.lengths):
            lp_t = torch.tensor(lp)
            raw = int(lp_t.argmax())
            pred = int((torch.log_softmax(lp_t, 0) - cf).argmax()) if cf is not None else raw
            choices = self.task.continuations(r)
            norm = int(torch.tensor([v / max(len(c.removeprefix(' ')), 1) for v, c in zip(lp, choices)]).argmax())
            preds.append(pred), preds_raw.append(raw), preds_norm.append(norm)
            records.append({"idx": r["idx"], "label": r["label"], "pred": pred, "correct": pred == r["label"],
                            "logprobs": lp, "continuation_tokens": ln})
        n = len(labels)
        metrics = accuracy_metrics(self.task, labels, preds, tokens, t0)
        if self.task.kind == "multiple_choice":
            # lm-eval's acc_norm: log-likelihood divided by the continuation's length in characters
            metrics["acc_norm"] = sum(int(p == y) for p, y in zip(preds_norm, labels)) / n
        if cf is not None:
            metrics["accuracy_uncalibrated"] = sum(int(p == y) for p, y in zip(preds_raw, labels)) / n
            metrics["content_free_probs"] = [math.exp(v) for v in cf.tolist()]
        return EvalResult(metrics, records)


class ICLLayerReuse:
    """:meth:`ICLEvaluator.layer_reuse`: its evaluation from a recorded layer (see :class:`LayerReuse`)."""

    def __init__(self, evaluator: ICLEvaluator, model, arch, layers: set[int], memory_budget: int | None = None,
                 overflow: str = "auto", progress: bool = False):
        from tqdm.auto import tqdm

        self.evaluator, self.model = evaluator, model
        t0 = time.perf_counter()
        self.scorer = LayerReuseScorer(model, arch, evaluator.plan, evaluator.batch_size, layers, memory_budget,
                                       overflow)
        with tqdm(total=evaluator.num_rows, desc="baseline (unedited, recording layers)", unit="row",
                  disable=not progress) as bar:
            self.baseline = evaluator.result(model, self.scorer.record_baseline(bar), t0)

    def evaluate_from(self, layer: int, progress: bool = False) -> EvalResult:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        with tqdm(total=self.evaluator.num_rows, desc="icl eval", unit="row", disable=not progress,
                  leave=False) as bar:
            scores = self.scorer.score_from(layer, bar)
        return self.evaluator.result(self.model, scores, t0)

    def memory(self) -> dict:
        return self.scorer.memory()


class PooledEvaluator:
    """Several evaluators as one (e.g. task instances, each with its own demonstrations): their examples
    pooled, accuracy = all correct / all examples. A memory budget for layer reuse is shared evenly."""

    def __init__(self, evaluators: list):
        if not evaluators:
            raise LeantuneError("nothing to pool: no evaluators")
        self.evaluators = list(evaluators)
        self.reuses_layers = all(ev.reuses_layers for ev in self.evaluators)

    @property
    def tokens_per_evaluation(self) -> int:
        return sum(ev.tokens_per_evaluation for ev in self.evaluators)

    @property
    def gold(self) -> list[int]:
        return [y for ev in self.evaluators for y in ev.gold]

    @property
    def label_names(self):
        return self.evaluators[0].label_names  # pooled instances of one task family share their label set

    def calibration_control(self, model, tokenizer, result: EvalResult) -> EvalResult | None:
        return None  # each pooled instance has its own demonstrations (and content-free prior): not one control

    def evaluate(self, model, progress: bool = False, desc: str = "icl eval") -> EvalResult:
        return pool_results([ev.evaluate(model, progress, desc) for ev in self.evaluators])

    def estimate_memory(self, model, arch, recorded_layers: int, memory_budget: int | None = None,
                        overflow: str = "auto") -> dict:
        """One evaluator runs at a time (the largest counts); every one keeps its recorded states."""
        share = None if memory_budget is None else memory_budget // len(self.evaluators)
        parts = [ev.estimate_memory(model, arch, recorded_layers, share, overflow) for ev in self.evaluators]
        out = {k: max(m[k] for m in parts) for k in ("kv_caches", "activations")}
        for k in ("recorded_states", "recorded_states_per_layer", "recorded_states_on_cpu"):
            if any(k in m for m in parts):
                out[k] = sum(m.get(k, 0) for m in parts)
        return out

    def layer_reuse(self, model, arch, layers: set[int], memory_budget: int | None = None,
                    overflow: str = "auto", progress: bool = False) -> "PooledLayerReuse | None":
        share = None if memory_budget is None else memory_budget // len(self.evaluators)
        parts = [ev.layer_reuse(model, arch, layers, share, overflow, progress) for ev in self.evaluators]
        return None if any(p is None for p in parts) else PooledLayerReuse(parts)


class PooledLayerReuse:
    """:meth:`PooledEvaluator.layer_reuse`: the layer reuse of every pooled evaluator."""

    def __init__(self, parts: list[LayerReuse]):
        self.parts = parts
        self.baseline = pool_results([p.baseline for p in parts])

    def evaluate_from(self, layer: int, progress: bool = False) -> EvalResult:
        return pool_results([p.evaluate_from(layer, progress) for p in self.parts])

    def memory(self) -> dict:
        mems = [p.memory() for p in self.parts]
        return {"device": sum(m["device"] for m in mems), "cpu": sum(m["cpu"] for m in mems),
                "recorded_layers": sorted({x for m in mems for x in m["recorded_layers"]}),
                "on_cpu": sorted({x for m in mems for x in m["on_cpu"]}), "overflow": mems[0]["overflow"],
                "per_layer": sum(m["per_layer"] for m in mems)}


def pool_results(results: list[EvalResult]) -> EvalResult:
    """One result for the examples of all ``results``: counts and tokens summed, predictions in order."""
    correct, n = sum(r.metrics["correct"] for r in results), sum(r.metrics["n"] for r in results)
    preds = [p for r in results for p in r.predictions]
    names = results[0].metrics.get("labels")
    return EvalResult(with_stats({"accuracy": correct / n, "n": n, "correct": correct,
                                  "tokens_processed": sum(r.metrics["tokens_processed"] for r in results),
                                  "seconds": sum(r.metrics["seconds"] for r in results)},
                                 [p["label"] for p in preds], [p["pred"] for p in preds], names), preds)


class ClassifierEvaluator(LabelledExamples):
    """Accuracy of a sequence-classification model (e.g. a fine-tuned MiniLM) on labelled records."""

    def __init__(self, tokenizer, task: Task, examples: list[dict], batch_size: int = 32, max_length: int = 128):
        if not examples:
            raise LeantuneError(f"task {task.name}: no examples to evaluate")
        self.task, self.examples, self.batch_size = task, examples, batch_size
        texts = [[r[f] for f in task.text_fields[:2]] for r in examples]
        self.encodings = [tokenizer(*zip(*texts[i:i + batch_size]), truncation=True, max_length=max_length,
                                    padding=True, return_tensors="pt") for i in range(0, len(texts), batch_size)]

    reuses_layers = False

    def calibration_control(self, model, tokenizer, result: EvalResult) -> EvalResult | None:
        return None  # contextual calibration is a prompting method; a classifier has no prompt

    @property
    def tokens_per_evaluation(self) -> int:
        return sum(int(e["attention_mask"].sum()) for e in self.encodings)

    def estimate_memory(self, model, arch, recorded_layers: int, memory_budget: int | None = None,
                        overflow: str = "auto") -> dict:
        """No prefix, no KV cache, no recorded states: the activations of the largest batch."""
        enc = max(self.encodings, key=lambda e: e["input_ids"].numel())
        b, w = enc["input_ids"].shape
        return {"activations": 4 * b * w * hidden_size(model) * model_dtype(model).itemsize, "kv_caches": 0,
                "recorded_states": 0}

    def layer_reuse(self, model, arch, layers: set[int], memory_budget: int | None = None,
                    overflow: str = "auto", progress: bool = False) -> None:
        """None: a classifier scores short inputs without a shared prefix in one pass each; nothing is
        recorded (the search evaluates every candidate in full)."""
        return None

    @torch.no_grad()
    def evaluate(self, model, progress: bool = False, desc: str = "classifier eval") -> EvalResult:
        t0 = time.perf_counter()
        from ..precision import input_device

        device = input_device(model)
        preds, tokens = [], 0
        for enc in self.encodings:
            out = model(**{k: v.to(device) for k, v in enc.items()})
            check_finite_scores(out.logits.float().tolist(), model)
            preds += out.logits.argmax(-1).tolist()
            tokens += int(enc["attention_mask"].sum())
        labels = self.gold
        records = [{"idx": r["idx"], "label": y, "pred": p, "correct": p == y}
                   for r, y, p in zip(self.examples, labels, preds)]
        return EvalResult(accuracy_metrics(self.task, labels, preds, tokens, t0), records)
