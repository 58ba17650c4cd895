"""Tiny random models built from real HF configs, one per supported family (and Falcon layout)."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

V = 96  # vocabulary size of the tiny models


def _common(**kw):
    return {"vocab_size": V, "bos_token_id": 1, "eos_token_id": 2, **kw}


TINY_CONFIGS = {
    "gpt2": lambda: tf.GPT2Config(**_common(n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "gptj": lambda: tf.GPTJConfig(**_common(n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4)),
    "gpt_neox": lambda: tf.GPTNeoXConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                   intermediate_size=64, max_position_embeddings=64,
                                                   rotary_pct=0.5)),
    "llama": lambda: tf.LlamaConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                              num_key_value_heads=2, intermediate_size=48,
                                              max_position_embeddings=64)),
    "mistral": lambda: tf.MistralConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                  num_key_value_heads=2, intermediate_size=48,
                                                  max_position_embeddings=64)),
    "qwen2": lambda: tf.Qwen2Config(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                              num_key_value_heads=2, intermediate_size=48,
                                              max_position_embeddings=64)),
    "gemma": lambda: tf.GemmaConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                              num_key_value_heads=1, head_dim=8, intermediate_size=48,
                                              max_position_embeddings=64)),
    "gemma2": lambda: tf.Gemma2Config(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                num_key_value_heads=2, head_dim=8, intermediate_size=48,
                                                max_position_embeddings=64, sliding_window=16)),
    "opt": lambda: tf.OPTConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=48,
                                          max_position_embeddings=64, word_embed_proj_dim=32)),
    "falcon-mq": lambda: tf.FalconConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                   multi_query=True, new_decoder_architecture=False,
                                                   parallel_attn=True, bias=False)),
    "falcon-interleaved": lambda: tf.FalconConfig(**_common(hidden_size=32, num_hidden_layers=2,
                                                            num_attention_heads=4, multi_query=False,
                                                            new_decoder_architecture=False, bias=True,
                                                            alibi=True, parallel_attn=False)),
    "falcon-grouped": lambda: tf.FalconConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                        num_kv_heads=2, new_decoder_architecture=True)),
    "phi": lambda: tf.PhiConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=48, max_position_embeddings=64,
                                          partial_rotary_factor=0.5)),
    "phi3": lambda: tf.Phi3Config(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, intermediate_size=48,
                                            max_position_embeddings=64, pad_token_id=0)),
    "bloom": lambda: tf.BloomConfig(**_common(hidden_size=32, n_layer=2, n_head=4)),
    "bert": lambda: tf.BertConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=48, max_position_embeddings=64)),
    "roberta": lambda: tf.RobertaConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                  intermediate_size=48, max_position_embeddings=64,
                                                  pad_token_id=1)),
}



def _decoder(config_class, **kw):
    """A llama-style decoder: hidden 32, 2 layers, 4 query heads over 2 key/value heads (GQA)."""
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                intermediate_size=48, max_position_embeddings=64, pad_token_id=0)
    return lambda: config_class(**_common(**{**base, **kw}))


# Mixture-of-experts families: 4 small experts keep the models tiny (their defaults hold up to 128).
_MOE = dict(num_experts_per_tok=2, moe_intermediate_size=16)

TINY_CONFIGS.update({
    # separate q/k/v/o + gated MLP
    "ministral": _decoder(tf.MinistralConfig),
    "qwen3": _decoder(tf.Qwen3Config),
    "gemma3_text": _decoder(tf.Gemma3TextConfig, sliding_window=16),
    # Gemma3ForConditionalGeneration (the multimodal wrapper): a tiny SigLIP tower beside the text model;
    # the image marker tokens sit above the ids tiny_input draws.
    "gemma3": lambda: tf.Gemma3Config(
        text_config=_decoder(tf.Gemma3TextConfig, sliding_window=16, vocab_size=V + 3)().to_dict(),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        mm_tokens_per_image=4, image_token_index=V, boi_token_index=V + 1, eoi_token_index=V + 2),
    "vaultgemma": _decoder(tf.VaultGemmaConfig, sliding_window=16),
    "olmo": _decoder(tf.OlmoConfig),
    "olmo2": _decoder(tf.Olmo2Config),
    "olmo3": _decoder(tf.Olmo3Config, sliding_window=16),
    "stablelm": _decoder(tf.StableLmConfig, qk_layernorm=True, use_qkv_bias=True, partial_rotary_factor=0.5),
    "cohere": _decoder(tf.CohereConfig, use_qk_norm=True),
    "cohere2": _decoder(tf.Cohere2Config, sliding_window=16),
    "granite": _decoder(tf.GraniteConfig, attention_multiplier=0.3, residual_multiplier=0.5),
    "helium": _decoder(tf.HeliumConfig),
    "exaone": _decoder(tf.ExaoneConfig),  # exaone, internlm3, iquestcoder: LlamaForCausalLM, own model type
    "internlm3": _decoder(tf.InternLM3Config),
    "iquestcoder": _decoder(tf.IQuestCoderConfig),
    "exaone4": _decoder(tf.Exaone4Config),
    "seed_oss": _decoder(tf.SeedOssConfig, attention_bias=True),
    "smollm3": _decoder(tf.SmolLM3Config),
    "ernie4_5": _decoder(tf.Ernie4_5Config),
    "hunyuan_v1_dense": _decoder(tf.HunYuanDenseV1Config),
    "cwm": _decoder(tf.CwmConfig, sliding_window=16),
    "hyperclovax": _decoder(tf.HyperCLOVAXConfig),
    # separate q/k/v/o + ungated or fused MLP
    "apertus": _decoder(tf.ApertusConfig),
    "arcee": _decoder(tf.ArceeConfig),
    "nemotron": _decoder(tf.NemotronConfig, partial_rotary_factor=0.5),
    "jais2": _decoder(tf.Jais2Config),
    "nanochat": _decoder(tf.NanoChatConfig),
    "starcoder2": _decoder(tf.Starcoder2Config, use_bias=True),
    "glm": _decoder(tf.GlmConfig),
    "glm4": _decoder(tf.Glm4Config),
    # separate projections, older decoders
    "biogpt": lambda: tf.BioGptConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=48, max_position_embeddings=64)),
    "xglm": lambda: tf.XGLMConfig(**_common(d_model=32, num_layers=2, attention_heads=4, ffn_dim=48,
                                            max_position_embeddings=64)),
    "gpt_neo": lambda: tf.GPTNeoConfig(**_common(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
                                                 max_position_embeddings=64, window_size=4,
                                                 attention_types=[[["global", "local"], 1]])),
    # fused q/k/v
    "gpt_bigcode-mq": lambda: tf.GPTBigCodeConfig(**_common(n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                            multi_query=True)),
    "gpt_bigcode-mha": lambda: tf.GPTBigCodeConfig(**_common(n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                             multi_query=False)),
    "codegen": lambda: tf.CodeGenConfig(**_common(n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4)),
    "mpt": lambda: tf.MptConfig(**_common(d_model=32, n_layers=2, n_heads=4, expansion_ratio=2, max_seq_len=64)),
    "persimmon": lambda: tf.PersimmonConfig(**_common(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                      intermediate_size=48, max_position_embeddings=64,
                                                      qk_layernorm=True, partial_rotary_factor=0.5)),
    "gpt_neox_japanese": lambda: tf.GPTNeoXJapaneseConfig(**_common(hidden_size=32, num_hidden_layers=2,
                                                                    num_attention_heads=4, intermediate_multiple_size=2,
                                                                    max_position_embeddings=64)),
    "openai-gpt": lambda: tf.OpenAIGPTConfig(**_common(n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "ctrl": lambda: tf.CTRLConfig(**_common(n_embd=32, n_layer=2, n_head=4, dff=48, n_positions=64)),
    "modernbert-decoder": lambda: tf.ModernBertDecoderConfig(**_common(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, pad_token_id=0, attention_bias=True, mlp_bias=True, local_attention=16)),
    "modernbert": lambda: tf.ModernBertConfig(**_common(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, pad_token_id=0, attention_bias=True, mlp_bias=True, local_attention=16)),
    "ministral3": _decoder(tf.Ministral3Config),
    "granite_swa": _decoder(tf.GraniteSWAConfig, sliding_window=16),
    "apertus1p5_text": _decoder(tf.Apertus1p5TextConfig),
    # BERT-style encoders (masked LM heads)
    **{name: (lambda c=config_class, extra=extra: c(**_common(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, pad_token_id=0, **extra)))
       for name, config_class, extra in [
           ("xlm-roberta", tf.XLMRobertaConfig, {}), ("camembert", tf.CamembertConfig, {}),
           ("electra", tf.ElectraConfig, {"embedding_size": 32}), ("data2vec-text", tf.Data2VecTextConfig, {}),
           ("roberta-prelayernorm", tf.RobertaPreLayerNormConfig, {}), ("ernie", tf.ErnieConfig, {}),
           ("megatron-bert", tf.MegatronBertConfig, {}), ("xmod", tf.XmodConfig, {"default_language": "en_XX"}),
           ("bert-generation", tf.BertGenerationConfig, {})]},
    # mixture of experts: attention mapped, MLP refused with a reason
    "mixtral": _decoder(tf.MixtralConfig, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": _decoder(tf.Qwen2MoeConfig, num_experts=4, shared_expert_intermediate_size=16, **_MOE),
    "qwen3_moe": _decoder(tf.Qwen3MoeConfig, num_experts=4, **_MOE),
    "olmoe": _decoder(tf.OlmoeConfig, num_experts=4, num_experts_per_tok=2),
    "phimoe": _decoder(tf.PhimoeConfig, num_local_experts=4, num_experts_per_tok=2),
    "granitemoe": _decoder(tf.GraniteMoeConfig, num_local_experts=4, num_experts_per_tok=2),
    "granitemoeshared": _decoder(tf.GraniteMoeSharedConfig, num_local_experts=4, num_experts_per_tok=2,
                                 shared_intermediate_size=16),
    "flex_olmo": _decoder(tf.FlexOlmoConfig, num_experts=4, num_experts_per_tok=2),
    "cohere2_moe": _decoder(tf.Cohere2MoeConfig, num_experts=4, **_MOE),
    "gpt_oss": _decoder(tf.GptOssConfig, num_local_experts=4, num_experts_per_tok=2, sliding_window=16),
    "granitemoe_swa": _decoder(tf.GraniteMoeSWAConfig, num_local_experts=4, num_experts_per_tok=2, sliding_window=16),
    "glm4_moe": _decoder(tf.Glm4MoeConfig, n_routed_experts=4, n_shared_experts=1, **_MOE),
    "ernie4_5_moe": _decoder(tf.Ernie4_5_MoeConfig, moe_num_experts=4, moe_k=2, moe_intermediate_size=16,
                             moe_num_shared_experts=1),
    "exaone_moe": _decoder(tf.ExaoneMoeConfig, num_experts=4, num_shared_experts=1, sliding_window=16, **_MOE),
    "hunyuan_v1_moe": _decoder(tf.HunYuanMoEV1Config, num_experts=4, moe_topk=2),
    "minimax_m2": _decoder(tf.MiniMaxM2Config, num_local_experts=4, num_experts_per_tok=2),
    "dbrx": lambda: tf.DbrxConfig(**_common(d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                                            attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=100.0),
                                            ffn_config=dict(ffn_hidden_size=16, moe_num_experts=4, moe_top_k=2))),
})

# Encoders get a masked-LM head (bert-generation has none: it is built as the decoder it is).
ENCODERS = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "data2vec-text", "roberta-prelayernorm", "ernie",
            "megatron-bert", "xmod", "modernbert"}
CAUSAL = [k for k in TINY_CONFIGS if k not in ENCODERS]
# Families whose MLP is a mixture of experts: the map has their attention only.
MOE = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe", "granitemoe", "granitemoeshared", "flex_olmo",
       "cohere2_moe", "gpt_oss", "dbrx", "granitemoe_swa", "glm4_moe", "ernie4_5_moe", "exaone_moe", "hunyuan_v1_moe",
       "minimax_m2"}


_BUILT: dict[tuple, tuple[torch.nn.Module, torch.Tensor]] = {}


def tiny_model(name: str, seed: int = 0, head: str = "auto", attn: str = "eager", vocab_size: int | None = None):
    """A tiny random model in eval mode. ``head``: "auto" (causal LM / masked LM), "base" or "seq-cls".

    ``vocab_size=50257`` gives a model that the real GPT-2 tokenizer can drive. Each distinct model is
    built once per session and handed out as a deep copy (building is most of a parity test's time);
    the copy is bit-identical to a fresh build with the same seed, and callers may change it freely.
    The global torch RNG is left as a fresh build leaves it, so tests stay independent of their order.
    """
    key = (name, seed, head, attn, vocab_size)
    model_type = tiny_model_type(name)
    if model_type not in CONFIG_MAPPING_NAMES:  # the families table follows transformers 5.24; 5.0 has fewer
        pytest.skip(f"transformers {tf.__version__} does not ship model type '{model_type}'")
    if key not in _BUILT:
        model = _build(name, seed, head, attn, vocab_size)
        _BUILT[key] = (model, torch.get_rng_state())
    model, rng_after_build = _BUILT[key]
    torch.set_rng_state(rng_after_build)
    return copy.deepcopy(model)


def tiny_model_type(name: str) -> str:
    """The model type a TINY_CONFIGS entry builds ("falcon-mq" -> "falcon"; "xlm-roberta" is its own)."""
    return name if name in CONFIG_MAPPING_NAMES or "-" not in name else name.rsplit("-", 1)[0]


def _build(name: str, seed: int, head: str, attn: str, vocab_size: int | None):
    config = TINY_CONFIGS[name]()
    if vocab_size is not None:
        config.vocab_size = vocab_size
    config._attn_implementation = attn
    torch.manual_seed(seed)
    if head == "base":
        model = tf.AutoModel.from_config(config)
    elif head == "seq-cls":
        config.num_labels = 2
        model = tf.AutoModelForSequenceClassification.from_config(config)
    elif name in ENCODERS:
        model = tf.AutoModelForMaskedLM.from_config(config)
    else:
        model = tf.AutoModelForCausalLM.from_config(config)
    # Random biases (HF initialises them to zero) so that bias slices are really tested.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.02)
    return model.eval()


def tiny_input(seed: int = 1, batch: int = 2, length: int = 7):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V, (batch, length), generator=g)


def save_tiny_lm(path, family: str = "gpt2", layers: int = 4, tokenizer=None):
    """A tiny causal LM of ``family`` with the GPT-2 vocabulary (so the real GPT-2 tokenizer drives it), saved."""
    from leantune.models import gpt2_tokenizer_offline

    cfg = TINY_CONFIGS[family]()
    cfg.vocab_size = 50257
    if family == "gpt2":
        cfg.n_positions, cfg.n_layer = 1024, layers
    else:
        cfg.max_position_embeddings, cfg.num_hidden_layers = 1024, layers
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    (tokenizer or gpt2_tokenizer_offline()).save_pretrained(path)
    return path
