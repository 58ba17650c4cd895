"""Where each supported model family keeps its attention and MLP matrices.

One row per family (keyed by ``config.model_type``): the layer list, the attention module and, per
logical matrix, the module that holds it and, for fused projections, which of its output rows.
Paths are relative to ``model.base_model`` (so ``GPT2Model`` and ``GPT2LMHeadModel`` share a row) and
to one layer. Fused layouts are the ones the HF modeling code reads back in its ``forward``; each is
proven by a parity test in ``tests/test_arch_parity.py``. ``attention_doc`` and ``mlp_doc`` say the
same in words; ``scripts/families_table.py`` turns them into the README table.
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
    attention_doc: str = ""
    mlp_doc: str = ""
    # Why the MLP has no mlp_in/mlp_out here (mixture-of-experts); None when it has them.
    mlp_absent: str | None = None


def _separate(q: str, k: str, v: str, o: str, mlp_in: str | None, mlp_out: str | None, mlp_gate: str | None = None):
    def specs(config) -> MatrixSpecs:
        out: MatrixSpecs = {"q": (q, None), "k": (k, None), "v": (v, None), "o": (o, None)}
        if mlp_in:
            out["mlp_in"] = (mlp_in, None)
        if mlp_gate:
            out["mlp_gate"] = (mlp_gate, None)
        if mlp_out:
            out["mlp_out"] = (mlp_out, None)
        return out

    return specs


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


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


def _gate_up(config) -> MatrixSpecs:
    inter = config.intermediate_size
    gate_up = {"mlp_gate": inter, "mlp_in": inter}  # forward does gate, up = gate_up_proj(x).chunk(2)
    return {
        "mlp_in": ("mlp.gate_up_proj", layouts.concatenated(gate_up, "mlp_in")),
        "mlp_gate": ("mlp.gate_up_proj", layouts.concatenated(gate_up, "mlp_gate")),
        "mlp_out": ("mlp.down_proj", None),
    }


def _phi3(config) -> MatrixSpecs:
    heads, head_dim, kv = config.num_attention_heads, _head_dim(config), config.num_key_value_heads
    sizes = {"q": heads * head_dim, "k": kv * head_dim, "v": kv * head_dim}
    return {
        **{p: ("self_attn.qkv_proj", layouts.concatenated(sizes, p)) for p in "qkv"},
        "o": ("self_attn.o_proj", None),
        **_gate_up(config),
    }


def _glm(config) -> MatrixSpecs:
    return {**_LLAMA_ATTENTION(config), **_gate_up(config)}


def _gpt_bigcode(config) -> MatrixSpecs:
    d = config.n_embd
    head_dim = d // config.n_head
    if config.multi_query:  # c_attn(x).split((d, hd, hd)): one shared key/value head
        sizes = {"q": d, "k": head_dim, "v": head_dim}
        rows = {p: layouts.concatenated(sizes, p) for p in "qkv"}
    else:  # .view(heads, 3 * hd).split(hd): per-head interleaved
        rows = {p: layouts.per_head_interleaved(config.n_head, head_dim, p) for p in "qkv"}
    return {
        **{p: ("attn.c_attn", rows[p]) for p in "qkv"},
        "o": ("attn.c_proj", None),
        "mlp_in": ("mlp.c_fc", None),
        "mlp_out": ("mlp.c_proj", None),
    }


CODEGEN_SHARDS = 4  # CodeGenAttention.mp_num, a constant of the modeling code, not of the config


def _codegen(config) -> MatrixSpecs:
    # qkv_proj(x).view(mp_num, 3 * local).split(local) reads, per model-parallel shard, [Q | V | K]
    # (value before key); the shards concatenated give the heads in order.
    local = config.n_embd // CODEGEN_SHARDS
    rows = {p: layouts.per_head_interleaved(CODEGEN_SHARDS, local, p, parts=("q", "v", "k")) for p in "qkv"}
    return {
        **{p: ("attn.qkv_proj", rows[p]) for p in "qkv"},
        "o": ("attn.out_proj", None),
        "mlp_in": ("mlp.fc_in", None),
        "mlp_out": ("mlp.fc_out", None),
    }


def _mpt(config) -> MatrixSpecs:
    d = config.d_model
    sizes = {"q": d, "k": d, "v": d}  # Wqkv(x).chunk(3)
    return {
        **{p: ("attn.Wqkv", layouts.concatenated(sizes, p)) for p in "qkv"},
        "o": ("attn.out_proj", None),
        "mlp_in": ("ffn.up_proj", None),
        "mlp_out": ("ffn.down_proj", None),
    }


def _modernbert_decoder(config) -> MatrixSpecs:
    inter = config.intermediate_size
    # Wi(x).chunk(2) gives (input, gate) and the MLP computes act(input) * gate: the *first* half is the
    # activated branch, which leantune calls mlp_gate.
    halves = {"mlp_gate": inter, "mlp_in": inter}
    return {
        **_separate("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.Wo", None, None)(config),
        "mlp_in": ("mlp.Wi", layouts.concatenated(halves, "mlp_in")),
        "mlp_gate": ("mlp.Wi", layouts.concatenated(halves, "mlp_gate")),
        "mlp_out": ("mlp.Wo", None),
    }


def _modernbert(config) -> MatrixSpecs:
    d = config.hidden_size
    sizes = {"q": d, "k": d, "v": d}  # Wqkv(x).view(3, heads, hd): [Q | K | V]
    decoder = _modernbert_decoder(config)
    return {**{p: ("attn.Wqkv", layouts.concatenated(sizes, p)) for p in "qkv"},
            **{n: decoder[n] for n in ("o", "mlp_in", "mlp_gate", "mlp_out")}}


def _dbrx(config) -> MatrixSpecs:
    d = config.d_model
    head_dim = d // config.n_heads
    kv = config.attn_config.kv_n_heads
    sizes = {"q": d, "k": kv * head_dim, "v": kv * head_dim}  # Wqkv(x).split([d, kv*hd, kv*hd])
    return {
        **{p: ("norm_attn_norm.attn.Wqkv", layouts.concatenated(sizes, p)) for p in "qkv"},
        "o": ("norm_attn_norm.attn.out_proj", None),
    }


_LLAMA_ATTENTION = _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                             None, None)
_LLAMA_MATRICES = _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                            "mlp.up_proj", "mlp.down_proj", mlp_gate="mlp.gate_proj")
_UP_DOWN_MATRICES = _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                              "mlp.up_proj", "mlp.down_proj")
_BERT_MATRICES = _separate("attention.self.query", "attention.self.key", "attention.self.value",
                           "attention.output.dense", "intermediate.dense", "output.dense")
_BART_DECODER_MATRICES = _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                                   "fc1", "fc2")

SEPARATE_QKVO = "separate q/k/v/o_proj (GQA)"
MOE_WHY = ("its MLP (in all or most layers) is a mixture of experts whose weights are 3-D tensors (one slice "
           "per expert), not single matrices; leantune maps its attention only")


def _llama_like(name: str) -> Family:
    return Family(name, "layers", "self_attn", _LLAMA_MATRICES, SEPARATE_QKVO, "gate/up/down_proj")


def _up_down(name: str) -> Family:
    return Family(name, "layers", "self_attn", _UP_DOWN_MATRICES, SEPARATE_QKVO, "up/down_proj (no gate)")


def _moe(name: str) -> Family:
    return Family(name, "layers", "self_attn", _LLAMA_ATTENTION, SEPARATE_QKVO, "mixture of experts: not mapped",
                  mlp_absent=MOE_WHY)


def _bert_like(name: str) -> Family:
    return Family(name, "encoder.layer", "attention.self", _BERT_MATRICES,
                  "separate query/key/value, attention.output.dense", "intermediate.dense / output.dense")


def _rows(*families: Family) -> dict[str, Family]:
    return {f.name: f for f in families}


FAMILIES: dict[str, Family] = _rows(
    Family("gpt2", "h", "attn", _gpt2, "fused `c_attn` Conv1D `[in, 3d]`, `[Q|K|V]`", "Conv1D `c_fc`, `c_proj`"),
    Family("gptj", "h", "attn", _separate("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj",
                                          "mlp.fc_in", "mlp.fc_out"), "separate q/k/v/out_proj", "fc_in / fc_out"),
    Family("gpt_neox", "layers", "attention",
           _interleaved("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h",
                        "num_attention_heads"),
           "fused `query_key_value`, per-head interleaved `[heads, 3, hd]`", "dense_h_to_4h / dense_4h_to_h"),
    Family("gpt_neox_japanese", "layers", "attention",
           _interleaved("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h",
                        "num_attention_heads"),
           "fused `query_key_value`, per-head interleaved `[heads, 3, hd]`", "dense_h_to_4h / dense_4h_to_h"),
    Family("persimmon", "layers", "self_attn",
           _interleaved("self_attn.query_key_value", "self_attn.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h",
                        "num_attention_heads"),
           "fused `query_key_value`, per-head interleaved `[heads, 3, hd]`", "dense_h_to_4h / dense_4h_to_h"),
    Family("bloom", "h", "self_attention",
           _interleaved("self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h",
                        "mlp.dense_4h_to_h", "n_head"),
           "fused `query_key_value`, per-head interleaved `[heads, 3, hd]`", "dense_h_to_4h / dense_4h_to_h"),
    Family("falcon", "h", "self_attention", _falcon,
           "fused, three layouts: multi-query `[Q | K | V]`, per-head interleaved, `new_decoder_architecture` "
           "grouped `[kv, q_per_kv + 2, hd]`", "dense_h_to_4h / dense_4h_to_h"),
    Family("openai-gpt", "h", "attn", _gpt2, "fused `c_attn` Conv1D `[in, 3d]`, `[Q|K|V]`",
           "Conv1D `c_fc`, `c_proj`"),
    Family("gpt_bigcode", "h", "attn", _gpt_bigcode,
           "fused `c_attn` Linear: multi-query `[Q | K | V]` sizes `d, hd, hd`, else per-head interleaved",
           "`c_fc` / `c_proj`"),
    Family("codegen", "h", "attn", _codegen,
           "fused `qkv_proj`, 4 model-parallel shards each `[Q | V | K]`", "fc_in / fc_out"),
    Family("mpt", "blocks", "attn", _mpt, "fused `Wqkv` `[Q | K | V]`", "ffn.up_proj / ffn.down_proj"),
    Family("dbrx", "blocks", "norm_attn_norm.attn", _dbrx, "fused `Wqkv` `[Q | K | V]` with GQA sizes",
           "mixture of experts: not mapped", mlp_absent=MOE_WHY),
    Family("phi3", "layers", "self_attn", _phi3, "fused `qkv_proj` `[Q | K | V]` with GQA sizes",
           "fused `gate_up_proj` `[gate | up]`, down_proj"),
    Family("glm", "layers", "self_attn", _glm, SEPARATE_QKVO, "fused `gate_up_proj` `[gate | up]`, down_proj"),
    Family("glm4", "layers", "self_attn", _glm, SEPARATE_QKVO, "fused `gate_up_proj` `[gate | up]`, down_proj"),
    Family("modernbert-decoder", "layers", "attn", _modernbert_decoder, "separate q/k/v_proj, Wo",
           "fused `Wi` `[input | gate]` (act on the first half), Wo"),
    Family("modernbert", "layers", "attn", _modernbert, "fused `Wqkv` `[Q | K | V]`, Wo",
           "fused `Wi` `[input | gate]` (act on the first half), Wo"),
    Family("ctrl", "h", "multi_head_attention",
           _separate("multi_head_attention.Wq", "multi_head_attention.Wk", "multi_head_attention.Wv",
                     "multi_head_attention.dense", "ffn.0", "ffn.2"), "separate Wq/Wk/Wv, dense", "ffn.0 / ffn.2"),
    Family("opt", "decoder.layers", "self_attn", _BART_DECODER_MATRICES, "separate q/k/v/out_proj", "fc1 / fc2"),
    Family("biogpt", "layers", "self_attn", _BART_DECODER_MATRICES, "separate q/k/v/out_proj", "fc1 / fc2"),
    Family("xglm", "layers", "self_attn", _BART_DECODER_MATRICES, "separate q/k/v/out_proj", "fc1 / fc2"),
    Family("phi", "layers", "self_attn", _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                   "self_attn.dense", "mlp.fc1", "mlp.fc2"),
           "separate q/k/v_proj, dense", "fc1 / fc2"),
    Family("nanochat", "layers", "self_attn", _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                        "self_attn.o_proj", "mlp.fc1", "mlp.fc2"),
           SEPARATE_QKVO, "fc1 / fc2"),
    Family("starcoder2", "layers", "self_attn", _separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                          "self_attn.o_proj", "mlp.c_fc", "mlp.c_proj"),
           SEPARATE_QKVO, "`c_fc` / `c_proj`"),
    Family("gpt_neo", "h", "attn.attention", _separate("attn.attention.q_proj", "attn.attention.k_proj",
                                                       "attn.attention.v_proj", "attn.attention.out_proj",
                                                       "mlp.c_fc", "mlp.c_proj"),
           "separate q/k/v/out_proj", "`c_fc` / `c_proj`"),
    *(_llama_like(n) for n in ("llama", "mistral", "ministral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                               "vaultgemma", "olmo", "olmo2", "olmo3", "stablelm", "cohere", "cohere2", "granite",
                               "helium", "exaone", "exaone4", "seed_oss", "smollm3", "ernie4_5", "hunyuan_v1_dense",
                               "cwm", "hyperclovax", "internlm3", "iquestcoder", "ministral3", "granite_swa")),
    # Gemma3ForConditionalGeneration: the text model sits beside the vision tower.
    Family("gemma3", "language_model.layers", "self_attn", _LLAMA_MATRICES,
           "multimodal wrapper: its text model (`language_model`), separate q/k/v/o_proj (GQA)", "gate/up/down_proj"),
    *(_up_down(n) for n in ("apertus", "apertus1p5_text", "arcee", "nemotron", "jais2")),
    *(_moe(n) for n in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe", "granitemoe", "granitemoeshared",
                        "granitemoe_swa", "flex_olmo", "cohere2_moe", "gpt_oss", "glm4_moe", "ernie4_5_moe",
                        "exaone_moe", "hunyuan_v1_moe", "minimax_m2")),
    *(_bert_like(n) for n in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "data2vec-text",
                              "roberta-prelayernorm", "ernie", "megatron-bert", "xmod", "bert-generation")),
)
