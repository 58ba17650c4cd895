"""Writing through the map touches exactly the logical matrix, and read-then-write is lossless."""

import pytest
import torch
import transformers as tf

from leantune.arch import get_arch
from leantune.errors import LeantuneError
from tiny import MOE, TINY_CONFIGS, tiny_input, tiny_model
from capture import capture_qkv

FAMILIES = list(TINY_CONFIGS)
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
# Every family with the q, k, v and MLP matrices these write tests use; attention-only (MoE) families
# write q/k/v only.
CASES = [(f, m) for f in FAMILIES for m in ("q", "k", "v", "mlp_in", "mlp_out")
         if not (f in MOE and m.startswith("mlp"))]


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed_elements(before, model):
    """name -> bool mask of elements that differ from the snapshot."""
    return {n: (p.detach() != before[n]) for n, p in model.named_parameters()}


@pytest.mark.parametrize("name,matrix", CASES)
def test_write_changes_only_that_logical_matrix(name, matrix):
    model = tiny_model(name)
    arch = get_arch(model)
    m = arch.matrix(1, matrix)
    before = _snapshot(model)
    new = m.read() + 1.0  # every element changes
    m.write(new)
    if m.bias is not None:
        m.write_bias(m.read_bias() + 1.0)
    changed = _changed_elements(before, model)
    weight_name = m.module_path + ".weight"
    bias_name = m.module_path + ".bias"
    for n, mask in changed.items():
        if n not in (weight_name, bias_name):
            assert not mask.any(), f"{name}: writing {matrix} changed {n}"
    # exactly the logical rows of the (possibly fused) weight changed, all of them
    rows = m.row_index()
    w_mask = changed[weight_name]
    w_mask = w_mask.T if m.transposed else w_mask  # (out, in)
    expected = torch.zeros_like(w_mask)
    expected[rows] = True
    assert torch.equal(w_mask, expected)
    if m.bias is not None:
        b_expected = torch.zeros_like(changed[bias_name])
        b_expected[rows] = True
        assert torch.equal(changed[bias_name], b_expected)
    torch.testing.assert_close(m.read(), new, rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_written_q_is_what_the_model_uses(name, monkeypatch):
    model = tiny_model(name)
    arch = get_arch(model)
    q = arch.matrix(0, "q")
    new = torch.randn(q.shape, generator=torch.Generator().manual_seed(3)) * 0.1
    q.write(new)
    with capture_qkv(model, arch, monkeypatch) as rec, torch.no_grad():
        model(tiny_input())
    x = rec[0]["x"]
    b = q.read_bias()
    expected = x @ new.T + (0 if b is None else b)
    torch.testing.assert_close(rec[0]["q"], expected)


@pytest.mark.parametrize("name", FAMILIES)
def test_read_then_write_is_bit_identical(name):
    model = tiny_model(name)
    arch = get_arch(model)
    x = tiny_input()
    with torch.no_grad():
        ref = model(x).logits.clone()
    before = _snapshot(model)
    for m in arch.matrices():
        m.write(m.read())
        if m.bias is not None:
            m.write_bias(m.read_bias())
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref)


def test_read_is_a_copy_not_a_view():
    model = tiny_model("gpt2")
    m = get_arch(model).matrix(0, "v")
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    w = m.read()
    w.zero_()
    assert torch.equal(model.transformer.h[0].attn.c_attn.weight, before)


def test_write_rejects_wrong_shape():
    m = get_arch(tiny_model("llama")).matrix(0, "k")
    with pytest.raises(ValueError, match="expected shape"):
        m.write(torch.zeros(32, 32))


def test_map_works_on_base_and_head_models_alike():
    base, lm = tiny_model("gpt2", head="base"), tiny_model("gpt2")
    a, b = get_arch(base).matrix(1, "q"), get_arch(lm).matrix(1, "q")
    assert a.module_path == "h.1.attn.c_attn" and b.module_path == "transformer.h.1.attn.c_attn"
    assert get_arch(tiny_model("bert", head="seq-cls")).matrix(0, "v").module_path == \
        "bert.encoder.layer.0.attention.self.value"


class UnlistedConfig(tf.LlamaConfig):
    model_type = "unlisted_llama"  # a model type the family table does not know


def test_unknown_family_with_conventional_names_is_discovered():
    config = UnlistedConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=8, intermediate_size=48)
    model = tf.LlamaForCausalLM(config)
    arch = get_arch(model)
    assert "discovered" in arch.family.name and arch.num_layers == 3
    assert arch.matrix(2, "k").module is model.model.layers[2].self_attn.k_proj
    assert arch.matrix(0, "mlp_gate").module is model.model.layers[0].mlp.gate_proj


def test_undiscoverable_family_names_what_it_found():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.Wqkv = torch.nn.Linear(8, 24)
            self.out = torch.nn.Linear(8, 8)

    class Weird(tf.PreTrainedModel):
        config_class = tf.PretrainedConfig

        def __init__(self, config):
            super().__init__(config)
            self.blocks = torch.nn.ModuleList([Block(), Block()])

    config = tf.PretrainedConfig()
    config.model_type = "weird"
    with pytest.raises(LeantuneError, match=r"model type 'weird'.*Wqkv"):
        get_arch(Weird(config))


def test_layer_out_of_range_and_unknown_matrix():
    arch = get_arch(tiny_model("opt"))
    with pytest.raises(LeantuneError, match="out of range"):
        arch.matrix(2, "q")
    with pytest.raises(LeantuneError, match="mlp_gate"):
        arch.matrix(0, "mlp_gate")
