"""Where each supported model family keeps its attention and MLP matrices.

One row per family (keyed by ``config.model_type``): the layer list, the attention module and, per
logical matrix, the module that holds it and, for fused projections, which of its output rows.
Paths are relative to ``model.base_model`` (so ``GPT2Model`` and ``GPT2LMHeadModel`` share a row) and
to one layer. Fused layouts are the ones the HF modeling code reads back in its ``forward``; each is
proven by a parity test in ``tests/test_arch_parity.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import layouts
from .layouts import Rows

MatrixSpecs = dict[str, tuple[str, Rows | None]]


@dataclass(frozen=True)
class Family:
    name: str
    layers: str  # ModuleList of blocks, relative to the base model
    attention: str  # attention module, relative to a block
    matrices: Callable[[object], MatrixSpecs]


def _separate(q: str, k: str, v: str, o: str, mlp_in: str, mlp_out: str, mlp_gate: str | None = None):
    def specs(config) -> MatrixSpecs:
        out: MatrixSpecs = {"q": (q, None), "k": (k, None), "v": (v, None), "o": (o, None), "mlp_in": (mlp_in, None)}
        if mlp_gate:
            out["mlp_gate"] = (mlp_gate, None)
        out["mlp_out"] = (mlp_out, None)
        return out

    return specs


def _gpt2(config) -> MatrixSpecs:
    d = config.n_embd
    sizes = {"q": d, "k": d, "v": d}  # c_attn is a Conv1D [in, 3d]; .split(d) reads [Q | K | V]
    return {
        **{p: ("attn.c_attn", layouts.concatenated(sizes, p)) for p in "qkv"},
        "o": ("attn.c_proj", None),
        "mlp_in": ("mlp.c_fc", None),
        "mlp_out": ("mlp.c_proj", None),
    }


def _interleaved(qkv: str, o: str, mlp_in: str, mlp_out: str, heads_attr: str):
    def specs(config) -> MatrixSpecs:
        heads = getattr(config, heads_attr)
        head_dim = config.hidden_size // heads
        return {
            **{p: (qkv, layouts.per_head_interleaved(heads, head_dim, p)) for p in "qkv"},
            "o": (o, None),
            "mlp_in": (mlp_in, None),
            "mlp_out": (mlp_out, None),
        }

    return specs


def _falcon(config) -> MatrixSpecs:
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    qkv = "self_attention.query_key_value"
    if config.new_decoder_architecture:
        kv = config.num_kv_heads
        rows = {p: layouts.grouped_kv(kv, heads // kv, head_dim, p) for p in "qkv"}
    elif config.multi_query:
        sizes = {"q": heads * head_dim, "k": head_dim, "v": head_dim}
        rows = {p: layouts.concatenated(sizes, p) for p in "qkv"}
    else:
        rows = {p: layouts.per_head_interleaved(heads, head_dim, p) for p in "qkv"}
    return {
        **{p: (qkv, rows[p]) for p in "qkv"},
        "o": ("self_attention.dense", None),
        "mlp_in": ("mlp.dense_h_to_4h", None),
        "mlp_out": ("mlp.dense_4h_to_h", None),
    }


def _phi3(config) -> MatrixSpecs:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv = config.num_key_value_heads
    sizes = {"q": heads * head_dim, "k": kv * head_dim, "v": kv * head_dim}
    inter = config.intermediate_size
    gate_up = {"mlp_gate": inter, "mlp_in": inter}  # forward does gate, up = gate_up_proj(x).chunk(2)
    return {
        **{p: ("self_attn.qkv_proj", layouts.concatenated(sizes, p)) for p in "qkv"},
        "o": ("self_attn.o_proj", None),
        "mlp_in": ("mlp.gate_up_proj", layouts.concatenated(gate_up, "mlp_in")),
        "mlp_gate": ("mlp.gate_up_proj", layouts.concatenated(gate_up, "mlp_gate")),
        "mlp_out": ("mlp.down_proj", None),
    }


def _llama_like(name: str) -> Family:
    return Family(name, "layers", "self_attn", _LLAMA_MATRICES)


_LLAMA_MATRICES = _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.up_proj", "mlp.down_proj", mlp_gate="mlp.gate_proj")
def _bert_like(name: str) -> Family:
    return Family(name, "encoder.layer", "attention.self", _BERT_MATRICES)


_BERT_MATRICES = _separate("attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output.dense", "intermediate.dense", "output.dense")

FAMILIES: dict[str, Family] = {
    "gpt2": Family("gpt2", "h", "attn", _gpt2),
    "gptj": Family("gptj", "h", "attn", _separate("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj",
                                                   "mlp.fc_in", "mlp.fc_out")),
    "gpt_neox": Family("gpt_neox", "layers", "attention",
                       _interleaved("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h",
                                    "mlp.dense_4h_to_h", "num_attention_heads")),
    "llama": _llama_like("llama"),
    "mistral": _llama_like("mistral"),
    "qwen2": _llama_like("qwen2"),
    "gemma": _llama_like("gemma"),
    "gemma2": _llama_like("gemma2"),
    "opt": Family("opt", "decoder.layers", "self_attn",
                  _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                            "fc1", "fc2")),
    "falcon": Family("falcon", "h", "self_attention", _falcon),
    "phi": Family("phi", "layers", "self_attn", _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                          "self_attn.dense", "mlp.fc1", "mlp.fc2")),
    "phi3": Family("phi3", "layers", "self_attn", _phi3),
    "bloom": Family("bloom", "h", "self_attention",
                    _interleaved("self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h",
                                 "mlp.dense_4h_to_h", "n_head")),
    "bert": _bert_like("bert"),
    "roberta": _bert_like("roberta"),
}
