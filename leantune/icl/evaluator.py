"""Evaluators: model -> metrics on a fixed set of examples.

The SVD search only needs ``evaluate(model) -> EvalResult`` with an ``accuracy`` metric, so it runs
on ICL accuracy of a causal LM (:class:`ICLEvaluator`) or on the accuracy of a sequence
classifier such as a fine-tuned MiniLM (:class:`ClassifierEvaluator`) alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..errors import LeantuneError
from ..precision import check_finite_scores
from ..tasks import Task
from .scoring import Plan, prepare, score

CONTENT_FREE = "N/A"  # Zhao et al. 2021's content-free input
SEPARATOR = "\n\n"  # between demonstrations, and between the last demonstration and the query


@dataclass
class EvalResult:
    metrics: dict
    predictions: list[dict] = field(default_factory=list)


class Evaluator(Protocol):
    def evaluate(self, model, progress: bool = False) -> EvalResult: ...


def per_class(task: Task, labels: list[int], preds: list[int]) -> dict:
    out = {name: {"n": 0, "correct": 0, "predicted": 0} for name in task.labels}
    for y, p in zip(labels, preds):
        out[task.labels[y]]["n"] += 1
        out[task.labels[y]]["correct"] += int(y == p)
        out[task.labels[p]]["predicted"] += 1
    return out


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


class ICLEvaluator:
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
            blank = {k: CONTENT_FREE for k in examples[0] if k not in ("label", "idx")}
            self.calibration_plan = prepare(tokenizer, self.prefix, [task.render_context(blank)],
                                            [task.continuations(blank)])

    @property
    def num_rows(self) -> int:
        return len(self.plan.rows)

    def evaluate(self, model, progress: bool = False, runner=None) -> EvalResult:
        """``runner(model, plan, batch_size)`` may replace :func:`score` (the SVD search's layer reuse)."""
        from tqdm.auto import tqdm

        run = runner or (lambda m, plan, bs, bar=None: score(m, plan, bs, progress=bar))
        t0 = time.perf_counter()
        with tqdm(total=self.num_rows, desc="icl eval", unit="row", disable=not progress, leave=False) as bar:
            scores = run(model, self.plan, self.batch_size, bar)
        check_finite_scores(scores.logprobs, model)  # a float16 overflow is an error, never a NaN accuracy
        tokens = scores.tokens_processed
        cf = None
        if self.calibration_plan is not None:
            cal = run(model, self.calibration_plan, 1, None)
            check_finite_scores(cal.logprobs, model)
            tokens += cal.tokens_processed
            cf = torch.log_softmax(torch.tensor(cal.logprobs[0]), 0)
        labels = [r["label"] for r in self.examples]
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
        correct = sum(int(p == y) for p, y in zip(preds, labels))
        metrics = {"accuracy": correct / n, "n": n, "correct": correct,
                   "per_class": per_class(self.task, labels, preds),
                   "tokens_processed": tokens, "seconds": time.perf_counter() - t0}
        if self.task.kind == "multiple_choice":
            # lm-eval's acc_norm: log-likelihood divided by the continuation's length in characters
            metrics["acc_norm"] = sum(int(p == y) for p, y in zip(preds_norm, labels)) / n
        if cf is not None:
            metrics["accuracy_uncalibrated"] = sum(int(p == y) for p, y in zip(preds_raw, labels)) / n
            metrics["content_free_probs"] = [math.exp(v) for v in cf.tolist()]
        return EvalResult(metrics, records)


class ClassifierEvaluator:
    """Accuracy of a sequence-classification model (e.g. a fine-tuned MiniLM) on labelled records."""

    def __init__(self, tokenizer, task: Task, examples: list[dict], batch_size: int = 32, max_length: int = 128):
        if not examples:
            raise LeantuneError(f"task {task.name}: no examples to evaluate")
        self.task, self.examples, self.batch_size = task, examples, batch_size
        texts = [[r[f] for f in task.text_fields[:2]] for r in examples]
        self.encodings = [tokenizer(*zip(*texts[i:i + batch_size]), truncation=True, max_length=max_length,
                                    padding=True, return_tensors="pt") for i in range(0, len(texts), batch_size)]

    @torch.no_grad()
    def evaluate(self, model, progress: bool = False, runner=None) -> EvalResult:
        t0 = time.perf_counter()
        from ..precision import input_device

        device = input_device(model)
        preds, tokens = [], 0
        for enc in self.encodings:
            out = model(**{k: v.to(device) for k, v in enc.items()})
            check_finite_scores(out.logits.float().tolist(), model)
            preds += out.logits.argmax(-1).tolist()
            tokens += int(enc["attention_mask"].sum())
        labels = [r["label"] for r in self.examples]
        correct = sum(int(p == y) for p, y in zip(preds, labels))
        records = [{"idx": r["idx"], "label": y, "pred": p, "correct": p == y}
                   for r, y, p in zip(self.examples, labels, preds)]
        return EvalResult({"accuracy": correct / len(labels), "n": len(labels), "correct": correct,
                           "per_class": per_class(self.task, labels, preds), "tokens_processed": tokens,
                           "seconds": time.perf_counter() - t0}, records)
