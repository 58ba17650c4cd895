"""A prompt-based fine-tune of a causal LM: the task's ICL template is the prompt, the label word the answer,
and the loss is on the answer tokens only. No new head: the LM's own output layer scores the label words,
as the ICL scorer does at 0 shots, so `icl eval` measures the result directly.

The prompt and answer are tokenized by the ICL scorer's rule (``leantune/icl/tokenize.py``, the same as
lm-evaluation-harness: the tokens of ``prompt + answer`` after those of ``prompt``, trailing spaces moved to
the answer), so the tokens trained here are the tokens scored there; the finetune engine may not import the
icl engine, so the rule is restated in :func:`prompt_answer_ids` and a test holds the two equal.
"""

from __future__ import annotations

import torch

from ...errors import LeantuneError
from .base import Objective, register_objective

IGNORE = -100  # the label index torch's cross-entropy skips: prompt tokens and padding


def prompt_answer_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    n_spaces = len(prompt) - len(prompt.rstrip())
    if n_spaces:
        prompt, answer = prompt[:-n_spaces], prompt[-n_spaces:] + answer
    whole = tokenizer(prompt + answer).input_ids
    ctx = tokenizer(prompt).input_ids
    return ctx, whole[len(ctx):]


class PromptAnswer(torch.utils.data.Dataset):
    """Features ``input_ids`` (prompt + answer), ``labels`` (IGNORE over the prompt, the answer's ids)."""

    def __init__(self, records: list[dict], tokenizer, task, max_length: int):
        self.features = []
        for r in records:
            ctx, ans = prompt_answer_ids(tokenizer, task.render_context(r), task.continuations(r)[r["label"]])
            if not ans:
                raise LeantuneError(f"task {task.name}: the answer of record {r.get('idx')} tokenizes to nothing")
            ctx = ctx[-(max_length - len(ans)):] if len(ctx) + len(ans) > max_length else ctx  # keep the answer
            self.features.append({"input_ids": ctx + ans, "labels": [IGNORE] * len(ctx) + ans})

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i]


def pad_prompt_answer(tokenizer):
    pad = tokenizer.pad_token_id

    def collate(features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):  # right padding: positions 0.. are the same as unpadded
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


@register_objective
class CausalLM(Objective):
    name = "lm"
    head = "causal-lm"
    train_head = False  # the LM head is the (tied) embedding: the answer is learnt in the attention matrices

    def datasets(self, data, tokenizer, max_length: int) -> tuple:
        task = data.spec
        if task is None or task.kind != "classification" or not task.template or \
                len(task.label_words) != len(task.labels):
            raise LeantuneError(f"--objective lm needs a classification task with an ICL template and one label "
                                f"word per label (sst2, rte, ... or a task file); {data.task} has none: use "
                                "--objective classify")
        return (PromptAnswer(data.train, tokenizer, task, max_length),
                PromptAnswer(data.eval, tokenizer, task, max_length))

    def collator(self, tokenizer):
        return pad_prompt_answer(tokenizer)
