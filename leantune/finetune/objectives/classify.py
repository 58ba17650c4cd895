"""Sequence classification: a new task head on the model's pooled output, cross-entropy over the labels."""

from __future__ import annotations

from ..data import Encoded, compute_metrics
from .base import Objective, register_objective


@register_objective
class Classify(Objective):
    name = "classify"
    head = "seq-cls"
    train_head = True

    def datasets(self, data, tokenizer, max_length: int) -> tuple:
        return (Encoded(data.train, tokenizer, data.text_fields, max_length),
                Encoded(data.eval, tokenizer, data.text_fields, max_length))

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, data):
        n_labels = len(data.labels)
        return lambda p: compute_metrics(p.predictions.argmax(-1), p.label_ids, data.metric, n_labels)
