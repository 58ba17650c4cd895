"""Capture the q, k, v that a model's own attention computes, for parity tests against the map.

Rotary embeddings and q/k normalisations are switched off while capturing (they transform q and k
after the projection), so the captured tensors are exactly the projection outputs the model splits
out of its (possibly fused) weight. Everything else (the split, the head reshape, GQA/MQA sizes) is
the model's own code.
"""

from __future__ import annotations

import inspect
import sys
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

# Normalisations some families apply to q and k between the projection and the attention product.
QK_NORMS = ("q_norm", "k_norm", "q_layernorm", "k_layernorm", "query_layernorm", "key_layernorm")
# Families that compute attention in a private method `_attn(query, key, value, ...)` with (B, nh, T, hd).
ATTN_METHOD = ("gpt_neo", "gpt_neox_japanese", "openai-gpt")
# ... of which these pass the key already transposed for q @ k: (B, nh, hd, T).
KEY_TRANSPOSED = ("openai-gpt",)
# Families that compute attention inline: the first matmul/bmm in the attention forward is q @ k^T.
INLINE_MATMUL = {"mpt": "matmul", "xglm": "bmm", "megatron-bert": "matmul"}
# Families that multiply q_proj's output by 1/sqrt(hd) before the attention product.
SCALED_Q = ("opt", "xglm")


def _heads_to_flat(t: torch.Tensor) -> torch.Tensor:
    # (B, nh, T, hd) -> (B, T, nh*hd)
    b, h, s, d = t.shape
    return t.transpose(1, 2).reshape(b, s, h * d)


def _no_rotary(fn):
    """An identity with the signature of the family's apply_rotary_pos_emb: (q, k, cos, sin) or (t, sin, cos)."""
    first_two = list(inspect.signature(fn).parameters)[:2]
    if first_two[1] in ("k", "key", "key_states"):
        return lambda q, k, *a, **kw: (q, k)
    return lambda t, *a, **kw: t


@contextmanager
def capture_qkv(model, arch, monkeypatch):
    """Yields a dict layer -> {"x": attention input, "q", "k", "v": (B, T, out) tensors}."""
    records: dict[int, dict[str, torch.Tensor]] = {}
    model_type = model.config.model_type
    attn0 = arch.attention_module(0)
    modeling = sys.modules[type(attn0).__module__]
    attn_to_layer = {id(arch.attention_module(i)): i for i in range(arch.num_layers)}

    def unscale(module, q):
        return q / module.scaling if model_type in SCALED_Q else q

    with ExitStack() as stack:
        for i in range(arch.num_layers):
            attn = arch.attention_module(i)

            def pre_hook(mod, args, kwargs, i=i):
                x = args[0] if args else kwargs["hidden_states"]
                records.setdefault(i, {})["x"] = x.detach()

            h = attn.register_forward_pre_hook(pre_hook, with_kwargs=True)
            stack.callback(h.remove)
            for norm in QK_NORMS:
                if isinstance(getattr(attn, norm, None), nn.Module):
                    monkeypatch.setattr(attn, norm, nn.Identity())

        if hasattr(modeling, "apply_rotary_pos_emb"):
            monkeypatch.setattr(modeling, "apply_rotary_pos_emb", _no_rotary(modeling.apply_rotary_pos_emb))

        if model_type == "falcon":
            for i in range(arch.num_layers):
                attn = arch.attention_module(i)
                orig = attn._split_heads

                def split(fused, orig=orig, i=i, attn=attn):
                    q, k, v = orig(fused)  # (B, T, heads, hd); grouped layout broadcasts k/v per query head
                    b, s = q.shape[:2]
                    k_own, v_own = k, v
                    if attn.new_decoder_architecture:  # one k/v head per group, repeated per query head
                        g = attn.num_kv_heads
                        k_own = k.reshape(b, s, g, -1, k.shape[-1])[:, :, :, 0]
                        v_own = v.reshape(b, s, g, -1, v.shape[-1])[:, :, :, 0]
                    records[i].update(q=q.reshape(b, s, -1), k=k_own.reshape(b, s, -1), v=v_own.reshape(b, s, -1))
                    return q, k, v

                monkeypatch.setattr(attn, "_split_heads", split)
        elif model_type == "bloom":
            for i in range(arch.num_layers):
                attn = arch.attention_module(i)
                orig = attn._reshape

                def reshape(fused, orig=orig, i=i):
                    q, k, v = orig(fused)  # (B, nh, T, hd)
                    records[i].update(q=_heads_to_flat(q), k=_heads_to_flat(k), v=_heads_to_flat(v))
                    return q, k, v

                monkeypatch.setattr(attn, "_reshape", reshape)
        elif model_type in ATTN_METHOD:
            for i in range(arch.num_layers):
                attn = arch.attention_module(i)
                orig = attn._attn

                def attn_method(query, key, value, *args, orig=orig, i=i, **kwargs):
                    k = key.transpose(-1, -2) if model_type in KEY_TRANSPOSED else key
                    records[i].update(q=_heads_to_flat(query), k=_heads_to_flat(k), v=_heads_to_flat(value))
                    return orig(query, key, value, *args, **kwargs)

                monkeypatch.setattr(attn, "_attn", attn_method)
        elif model_type in INLINE_MATMUL:
            stack.enter_context(_inline_capture(arch, records, INLINE_MATMUL[model_type], unscale, monkeypatch))
        else:
            orig_eager = modeling.eager_attention_forward

            def eager(module, query, key, value, *args, **kwargs):
                i = attn_to_layer[id(module)]
                records[i].update(q=unscale(module, _heads_to_flat(query)), k=_heads_to_flat(key),
                                  v=_heads_to_flat(value))
                return orig_eager(module, query, key, value, *args, **kwargs)

            monkeypatch.setattr(modeling, "eager_attention_forward", eager)
        yield records


@contextmanager
def _inline_capture(arch, records, op_name, unscale, monkeypatch):
    """For attention written inline: inside each attention forward, torch.<op>(q, k^T) comes first and
    torch.<op>(probs, v) last. The tensors are (B, nh, T, hd) (matmul) or (B*nh, T, hd) (bmm)."""
    op = getattr(torch, op_name)
    current: dict = {}

    def spy(a, b, *args, **kwargs):
        if current:
            module, i, calls = current["module"], current["layer"], current["calls"]
            if calls == 0:
                records[i]["q"] = unscale(module, _flat(a, records[i]["x"]))
                records[i]["k"] = _flat(b.transpose(-1, -2), records[i]["x"])
            else:
                records[i]["v"] = _flat(b, records[i]["x"])
            current["calls"] = calls + 1
        return op(a, b, *args, **kwargs)

    def wrap(module, i):
        orig = module.forward

        def forward(*args, **kwargs):
            current.update(module=module, layer=i, calls=0)
            try:
                return orig(*args, **kwargs)
            finally:
                current.clear()

        monkeypatch.setattr(module, "forward", forward)

    for i in range(arch.num_layers):
        wrap(arch.attention_module(i), i)
    monkeypatch.setattr(torch, op_name, spy)
    yield


def _flat(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hd) or (B*nh, T, hd) -> (B, T, nh*hd), with B and T taken from the attention input x."""
    b, s = x.shape[:2]
    return t.reshape(b, -1, s, t.shape[-1]).transpose(1, 2).reshape(b, s, -1)
