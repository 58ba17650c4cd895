"""The architecture map agrees with what each family's own forward computes (tiny random models)."""

import pytest
import torch

from leantune.arch import MLP, get_arch
from leantune.errors import LeantuneError
from tiny import MOE, TINY_CONFIGS, tiny_input, tiny_model
from capture import capture_qkv

FAMILIES = list(TINY_CONFIGS)
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
WITH_MLP = [f for f in FAMILIES if f not in MOE]


def _apply(m, x):
    y = x @ m.read().T
    b = m.read_bias()
    return y if b is None else y + b


@pytest.mark.parametrize("name", FAMILIES)
def test_qkv_parity_with_models_own_attention(name, monkeypatch):
    model = tiny_model(name)
    arch = get_arch(model)
    with capture_qkv(model, arch, monkeypatch) as rec, torch.no_grad():
        model(tiny_input())
    assert sorted(rec) == list(range(arch.num_layers))
    for layer in range(arch.num_layers):
        x = rec[layer]["x"]
        for part in "qkv":
            torch.testing.assert_close(rec[layer][part], _apply(arch.matrix(layer, part), x),
                                       msg=lambda m: f"{name} layer {layer} {part}: {m}")


# Where each family keeps the activation between mlp_in and mlp_out (relative to a block); test-only
# knowledge used to check that the map's mlp matrices reproduce the block's own MLP computation.
ACTIVATION = {"gpt2": "mlp.act", "gptj": "mlp.act", "gpt_neox": "mlp.act", "opt": "activation_fn",
              "falcon": "mlp.act", "phi": "mlp.activation_fn", "phi3": "mlp.activation_fn",
              "bloom": "mlp.gelu_impl", "bert": "intermediate.intermediate_act_fn",
              "roberta": "intermediate.intermediate_act_fn", "nanochat": "mlp.activation_fn",
              "starcoder2": "mlp.act", "glm": "mlp.activation_fn", "glm4": "mlp.activation_fn",
              "biogpt": "activation_fn", "xglm": "activation_fn", "gpt_neo": "mlp.act", "mpt": "ffn.act",
              "persimmon": "mlp.act", "gpt_neox_japanese": "mlp.act", "codegen": "mlp.act",
              "gpt_bigcode": "mlp.act", "openai-gpt": "mlp.act", "ctrl": "ffn.1", "modernbert-decoder": "mlp.act",
              "modernbert": "mlp.act",
              **{e: "intermediate.intermediate_act_fn" for e in ("xlm-roberta", "camembert", "electra", "data2vec-text",
                                                                  "roberta-prelayernorm", "ernie", "megatron-bert",
                                                                  "xmod", "bert-generation")}}


def _activation(model, block):
    path = ACTIVATION.get(model.config.model_type, "mlp.act_fn")
    obj = block
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", WITH_MLP)
def test_mlp_parity_with_models_own_mlp(name):
    """mlp_out's input is act(mlp_in(x)) (or act(mlp_gate(x)) * mlp_in(x)); its output is mlp_out(h)."""
    model = tiny_model(name)
    arch = get_arch(model)
    seen = {}

    def keep(key):
        # clone: some blocks add the residual into the MLP output in place
        return lambda mod, args, out=None: seen.__setitem__(key, (args[0] if out is None else out).clone())

    hooks = []
    for layer in range(arch.num_layers):
        m_in, m_out = arch.matrix(layer, "mlp_in"), arch.matrix(layer, "mlp_out")
        hooks.append(m_in.module.register_forward_pre_hook(keep((layer, "x"))))
        hooks.append(m_out.module.register_forward_pre_hook(keep((layer, "h"))))
        hooks.append(m_out.module.register_forward_hook(keep((layer, "y"))))
    with torch.no_grad():
        model(tiny_input())
    for h in hooks:
        h.remove()
    for layer in range(arch.num_layers):
        x, h, y = seen[(layer, "x")], seen[(layer, "h")], seen[(layer, "y")]
        act = _activation(model, arch.layer_module(layer))
        up = _apply(arch.matrix(layer, "mlp_in"), x)
        if "mlp_gate" in arch.names:
            expected = act(_apply(arch.matrix(layer, "mlp_gate"), x)) * up
        else:
            expected = act(up)
        torch.testing.assert_close(h, expected, msg=lambda m: f"{name} layer {layer} mlp_in/gate: {m}")
        torch.testing.assert_close(y, _apply(arch.matrix(layer, "mlp_out"), h),
                                   msg=lambda m: f"{name} layer {layer} mlp_out: {m}")


@pytest.mark.parametrize("name", sorted(MOE))
def test_mixture_of_experts_mlp_is_refused_with_the_reason(name):
    """MoE families map their attention; asking for an MLP matrix names the family and says why not."""
    arch = get_arch(tiny_model(name))
    assert arch.names == ("q", "k", "v", "o")
    for matrix in MLP:
        expected = rf"'{matrix}' does not exist in {arch.family.name}: .*mixture of experts"
        with pytest.raises(LeantuneError, match=expected):
            arch.matrix(0, matrix)
