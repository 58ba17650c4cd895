"""Capture the q, k, v that a model's own attention computes, for parity tests against the map.

Rotary embeddings are switched off while capturing (they rotate q and k after the projection), so the
captured tensors are exactly the projection outputs the model splits out of its (possibly fused) weight.
"""

from __future__ import annotations

import importlib
from contextlib import ExitStack, contextmanager

import torch


def _heads_to_flat(t: torch.Tensor) -> torch.Tensor:
    # (B, nh, T, hd) -> (B, T, nh*hd)
    b, h, s, d = t.shape
    return t.transpose(1, 2).reshape(b, s, h * d)


@contextmanager
def capture_qkv(model, arch, monkeypatch):
    """Yields a dict layer -> {"x": attention input, "q", "k", "v": (B, T, out) tensors}."""
    records: dict[int, dict[str, torch.Tensor]] = {}
    model_type = model.config.model_type
    modeling = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    attn_to_layer = {id(arch.attention_module(i)): i for i in range(arch.num_layers)}

    with ExitStack() as stack:
        for i in range(arch.num_layers):
            attn = arch.attention_module(i)

            def pre_hook(mod, args, kwargs, i=i):
                x = args[0] if args else kwargs["hidden_states"]
                records.setdefault(i, {})["x"] = x.detach()

            h = attn.register_forward_pre_hook(pre_hook, with_kwargs=True)
            stack.callback(h.remove)

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
        else:
            orig_eager = modeling.eager_attention_forward

            def eager(module, query, key, value, *args, **kwargs):
                i = attn_to_layer[id(module)]
                q = _heads_to_flat(query)
                if model_type == "opt":  # OPT multiplies q_proj's output by 1/sqrt(hd) before attention
                    q = q / module.scaling
                records[i].update(q=q, k=_heads_to_flat(key), v=_heads_to_flat(value))
                return orig_eager(module, query, key, value, *args, **kwargs)

            monkeypatch.setattr(modeling, "eager_attention_forward", eager)
            if hasattr(modeling, "apply_rotary_pos_emb"):
                if model_type == "gptj":
                    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", lambda t, sin, cos: t)
                else:
                    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", lambda q, k, *a, **kw: (q, k))
        yield records
