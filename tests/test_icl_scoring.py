"""Prefix-cached batched scoring equals naive per-example full-forward scoring."""

import pytest
import torch

from leantune.icl.scoring import prepare, score
from leantune.models import gpt2_tokenizer_offline
from naive import naive_logprobs
from tiny import tiny_model

TOK = gpt2_tokenizer_offline()
PREFIX = ("text: a gripping, funny film\nsentiment : positive\n\n"
          "text: dull and far too long\nsentiment : negative\n\n")
QUERIES = ["text: a triumph\nsentiment :", "text: I wanted my two hours back, honestly\nsentiment :",
           "text: meh\nsentiment :", "text: the best thing this year, by far, with a cast to die for\nsentiment :",
           "text: not bad\nsentiment :"]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox", "opt"])
@pytest.mark.parametrize("kind", ["single", "multi", "copa"])
def test_cached_batched_equals_naive(family, kind):
    model = tiny_model(family, vocab_size=len(TOK), attn="sdpa")
    if kind == "single":
        choices = [[" positive", " negative"]] * len(QUERIES)
    elif kind == "multi":  # label words of several tokens, different lengths
        choices = [[" very positive indeed", " negative", " so-so"]] * len(QUERIES)
    else:  # per-example choices, as COPA
        choices = [[f" the {w} fell", f" nothing happened at {i}"] for i, w in enumerate("abcde")]
    plan = prepare(TOK, PREFIX, QUERIES, choices)
    assert len(plan.prefix_ids) > 10  # the demonstrations really are cached
    got = score(model, plan, batch_size=2).logprobs
    ref = naive_logprobs(model, TOK, PREFIX, QUERIES, choices)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), atol=1e-4, rtol=0)


def test_single_token_choices_share_one_row():
    plan = prepare(TOK, PREFIX, QUERIES, [[" positive", " negative"]] * len(QUERIES))
    assert len(plan.rows) == len(QUERIES)
    plan = prepare(TOK, PREFIX, QUERIES, [[" very positive", " negative"]] * len(QUERIES))
    assert len(plan.rows) == 2 * len(QUERIES)


def test_prefix_plus_query_tokens_equal_joined_string_tokens():
    # "\n\n" then "text" tokenizes differently alone than joined; the plan must follow the joined string
    plan = prepare(TOK, PREFIX, QUERIES, [[" positive", " negative"]] * len(QUERIES))
    for q, ref in zip(QUERIES, plan.choices):
        row = plan.rows[ref[0].row]
        assert row + ref[0].targets == TOK(PREFIX + q + " positive").input_ids
        assert row[:len(plan.prefix_ids)] == plan.prefix_ids


def test_zero_shot_has_no_prefix_and_still_matches():
    model = tiny_model("gpt2", vocab_size=len(TOK))
    choices = [[" positive", " negative"]] * 3
    plan = prepare(TOK, "", QUERIES[:3], choices)
    assert plan.prefix_ids == []
    torch.testing.assert_close(torch.tensor(score(model, plan).logprobs),
                               torch.tensor(naive_logprobs(model, TOK, "", QUERIES[:3], choices)), atol=1e-4, rtol=0)


def test_models_without_boolean_logits_to_keep_fall_back_to_masking_full_logits():
    # transformers < 5.2x (and some remote code) slice hidden_states[:, logits_to_keep, :] themselves,
    # which raises on a 2-D boolean mask; scoring must still work and give the same numbers
    from leantune.icl import scoring

    model = tiny_model("gpt2", vocab_size=len(TOK), attn="sdpa")

    class OldStyle(type(model)):
        calls = []

        def forward(self, *args, logits_to_keep=0, **kwargs):
            OldStyle.calls.append(logits_to_keep)
            if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.ndim == 2:
                raise IndexError("too many indices for tensor of dimension 3")
            return super().forward(*args, logits_to_keep=logits_to_keep, **kwargs)

    choices = [[" very positive indeed", " negative"]] * len(QUERIES)
    plan = prepare(TOK, PREFIX, QUERIES, choices)
    ref = score(model, plan, batch_size=2).logprobs
    model.__class__ = OldStyle
    try:
        got = score(model, plan, batch_size=2).logprobs
        torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), atol=1e-5, rtol=0)
        assert OldStyle in scoring._NO_MASK_SUPPORT
        tried_mask = sum(isinstance(k, torch.Tensor) and k.ndim == 2 for k in OldStyle.calls)
        assert tried_mask == 1  # asked once, then remembered
    finally:
        scoring._NO_MASK_SUPPORT.discard(OldStyle)
