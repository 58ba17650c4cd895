"""Write a tiny Llama as a GGUF file the way llama.cpp's converter does, for the GGUF loading tests.

llama.cpp stores Q and K rows permuted for its rotary kernel; transformers' GGUF reader undoes that
permutation, so a correct round trip proves both directions. F32 tensors (no quantization) keep the
comparison exact; the tokenizer is a byte-level BPE over single characters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers as tf

# byte-level BPE symbols (Ġ = space, Ċ = newline), the token transformers adds as unknown when it is absent, and
# one merge (two spaces): llama.cpp refuses a BPE vocabulary without merges
CHARS = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ", "<|endoftext|>", "ĠĠ"]
MERGES = ["Ġ Ġ"]


def tiny_llama() -> tf.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(CHARS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, rms_norm_eps=1e-5,
                         rope_theta=10000.0)
    return tf.LlamaForCausalLM(cfg).eval()


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model: tf.LlamaForCausalLM, path: Path, architecture: str = "llama", quant: str | None = None) -> Path:
    """``quant`` (e.g. "Q8_0", "Q4_1"): store the block matrices whose rows fit the block size in that type, as
    a quantized llama.cpp file does; the rest (norms, embeddings, rows of 48) stay F32."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_name("tiny-llama-test")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(CHARS)
    w.add_token_types([gguf.TokenType.NORMAL] * len(CHARS))
    w.add_token_scores([0.0] * len(CHARS))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}

    def add(name, array):
        if quant and name.startswith("blk.") and array.ndim == 2 and array.shape[1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType[quant]
            w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)  # bytes: shape from them
        else:
            w.add_tensor(name, array)

    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_q.weight", _llama_cpp_permute(sd[p + "self_attn.q_proj.weight"], c.num_attention_heads))
        add(f"blk.{i}.attn_k.weight", _llama_cpp_permute(sd[p + "self_attn.k_proj.weight"], c.num_key_value_heads))
        add(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        add(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        add(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
        add(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        add(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
