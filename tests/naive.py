"""Reference scoring for tests: one full forward per (example, choice), full log-softmax, no cache."""

import torch

from leantune.icl.tokenize import encode


@torch.no_grad()
def naive_logprobs(model, tokenizer, prefix, contexts, choices):
    out = []
    for ctx, chs in zip(contexts, choices):
        row = []
        for ch in chs:
            c, t = encode(tokenizer, prefix + ctx, ch)
            ids = torch.tensor([c + t])
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
            row.append(sum(float(logp[len(c) - 1 + i, tok]) for i, tok in enumerate(t)))
        out.append(row)
    return out
