"""Model types leantune deliberately does not map, each with the reason a user gets.

Both methods need ordinary per-layer q/k/v projections (Q/V fine-tuning trains W_q and W_v; the SVD
edit replaces one matrix by its low-rank approximation). The families below have something else in
their place, so a guess would silently train or prune the wrong thing; they are refused by name.
"""

from __future__ import annotations

_MLA = ("multi-head latent attention: keys and values come from a shared low-rank latent (kv_a_proj_with_mqa, "
        "kv_b_proj) and queries from q_a/q_b, so there is no single W_k or W_v matrix")
_STATE_SPACE = "a state-space / recurrent model without q/k/v attention projections"
_HYBRID = ("a hybrid that mixes attention with {other} layers, so most layers have no q/k/v; "
           "mapping only some layers would make layer indices mean different things")
_KV_SHARED = ("its last layers have no k_proj/v_proj of their own: they reuse the keys and values of an earlier "
              "layer (KV sharing), so W_k and W_v do not exist in every layer; not mapped")

REFUSED: dict[str, str] = {
    # Multi-head latent attention (DeepSeek-V2 style)
    "deepseek_v2": _MLA, "deepseek_v3": _MLA, "deepseek_v32": _MLA, "minicpm3": _MLA, "glm4_moe_lite": _MLA,
    "longcat_flash": _MLA, "kimi_linear": _MLA, "youtu": _MLA, "sarvam_mla": _MLA, "glm_moe_dsa": _MLA,
    "axk1": _MLA, "axk2": _MLA, "hy_v4": _MLA, "dots3_note": _MLA, "dots3_note_text": _MLA, "bailing_hybrid": _MLA,
    # No attention at all
    "mamba": _STATE_SPACE, "mamba2": _STATE_SPACE, "falcon_mamba": _STATE_SPACE, "rwkv": _STATE_SPACE,
    "xlstm": _STATE_SPACE,
    "recurrent_gemma": _HYBRID.format(other="recurrent (RG-LRU)"),
    # Attention in some layers only
    "jamba": _HYBRID.format(other="Mamba"), "zamba": _HYBRID.format(other="Mamba"),
    "zamba2": _HYBRID.format(other="Mamba"), "bamba": _HYBRID.format(other="Mamba"),
    "falcon_h1": "each layer runs Mamba-2 beside attention and sums them, so q/k/v alone do not describe a layer",
    "granitemoehybrid": _HYBRID.format(other="Mamba"), "nemotron_h": _HYBRID.format(other="Mamba"),
    "lfm2": _HYBRID.format(other="short-convolution"), "lfm2_moe": _HYBRID.format(other="short-convolution"),
    "qwen3_next": _HYBRID.format(other="Gated DeltaNet"), "qwen3_5": _HYBRID.format(other="Gated DeltaNet"),
    "qwen3_5_text": _HYBRID.format(other="Gated DeltaNet"), "olmo_hybrid": _HYBRID.format(other="Gated DeltaNet"),
    "qwen3_5_moe": _HYBRID.format(other="Gated DeltaNet"), "qwen3_5_moe_text": _HYBRID.format(other="Gated DeltaNet"),
    "qwen4_exp": _HYBRID.format(other="Gated DeltaNet"), "qwen4_exp_text": _HYBRID.format(other="Gated DeltaNet"),
    "lara_mini": _HYBRID.format(other="Gated DeltaNet"), "lfm3": _HYBRID.format(other="short-convolution"),
    "minimax": _HYBRID.format(other="linear (lightning) attention"),
    # Attention that is not plain q/k/v
    "jetmoe": "mixture-of-attention: each query projection is a mixture of experts (3-D expert weights) and "
              "k/v share one fused kv_proj, so there is no single W_q",
    "diffllama": "differential attention (two softmax maps per head from split q/k halves and learned lambdas) "
                 "does not go through the attention function leantune's parity tests capture; not proven, not mapped",
    **{name: _KV_SHARED for name in ("gemma3n", "gemma3n_text", "gemma4", "gemma4_text", "gemma4_assistant",
                                     "gemma4_unified", "gemma4_unified_text", "gemma4_unified_assistant")},
    "reformer": "LSH / local attention with shared query-key projections: there is no separate W_k",
    "xlnet": "two-stream relative attention stores q/k/v as 3-D parameters (not modules); not mapped",
}
