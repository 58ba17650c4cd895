"""The one tokenization rule of leantune's ICL scoring (the same as lm-evaluation-harness):

``whole = tok(context + continuation)``; ``context_ids = tok(context)``; the continuation is
``whole[len(context_ids):]``. Trailing spaces of the context move to the continuation first, so
" positive" is scored as one word token. Special tokens (e.g. Llama's BOS) are added as the
tokenizer does for a full text.
"""

from __future__ import annotations

from ..errors import LeantuneError


def encode(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces and continuation:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation).input_ids
    ctx = tokenizer(context).input_ids
    cont = whole[len(ctx):]
    if continuation and not cont:
        raise LeantuneError(f"the answer {continuation!r} tokenizes to nothing after its context; "
                            "choose another label word")
    return ctx, cont
