"""Tiny random models built from real HF configs, one per supported family (and Falcon layout)."""

from __future__ import annotations

import torch
import transformers as tf

V = 96  # vocabulary size of the tiny models


def _common(**kw):
    return dict(vocab_size=V, bos_token_id=1, eos_token_id=2, **kw)


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

CAUSAL = [k for k in TINY_CONFIGS if k not in ("bert", "roberta")]


def tiny_model(name: str, seed: int = 0, head: str = "auto", attn: str = "eager", vocab_size: int | None = None):
    """A tiny random model in eval mode. ``head``: "auto" (causal LM / masked LM), "base" or "seq-cls".

    ``vocab_size=50257`` gives a model that the real GPT-2 tokenizer can drive.
    """
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
    elif name in ("bert", "roberta"):
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
