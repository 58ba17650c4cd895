"""SVD edits: exact truncation, bit-identical restore, composition, layer reuse == full forward."""

import pytest
import torch

from leantune.arch import get_arch
from leantune.errors import LeantuneError
from leantune.icl.scoring import prepare, score
from leantune.models import gpt2_tokenizer_offline
from leantune.svd.edits import Edit, apply_edits, edited, module_matrices
from leantune.svd.lowrank import SVDCache, rank_for
from leantune.icl.layer_reuse import LayerReuseScorer
from tiny import tiny_input, tiny_model

TOK = gpt2_tokenizer_offline()
FAMILIES = ["gpt2", "llama", "gpt_neox", "opt"]


def _logits(model):
    with torch.no_grad():
        return model(tiny_input()).logits.clone()


@pytest.mark.parametrize("family", FAMILIES)
def test_rate_zero_and_restore_are_bit_identical(family):
    model = tiny_model(family)
    arch = get_arch(model)
    ref = _logits(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cache = SVDCache(arch)
    with edited(arch, [Edit(1, "all", 0.0)], cache):
        assert torch.equal(_logits(model), ref)
    with edited(arch, [Edit(1, "mlp", 0.9), Edit(0, "attn", 0.5)], cache):
        assert not torch.equal(_logits(model), ref)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert torch.equal(_logits(model), ref)


@pytest.mark.parametrize("family", FAMILIES + ["falcon-grouped", "phi3"])
def test_truncation_equals_torch_svd_reconstruction(family):
    model = tiny_model(family)
    arch = get_arch(model)
    cache = SVDCache(arch, torch.float64)
    for name in ("q", "v", "mlp_in"):
        m = arch.matrix(1, name)
        w = m.read().double()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        for rate in (0.1, 0.5, 0.995):
            r = rank_for(rate, m.shape)
            assert r == max(1, int((1 - rate) * min(m.shape)))
            expected = (u[:, :r] * s[:r]) @ vh[:r]
            with edited(arch, [Edit(1, name, rate)], cache):
                torch.testing.assert_close(m.read().double(), expected, atol=1e-6, rtol=1e-5)
                assert torch.linalg.matrix_rank(m.read().double(), atol=1e-5) == r


def test_edits_at_several_layers_compose_and_touch_only_their_matrices():
    model = tiny_model("gpt2")
    arch = get_arch(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    done = apply_edits(arch, [Edit(0, "v", 0.5), Edit(1, "mlp", 0.75)], SVDCache(arch))
    assert [(d["layer"], d["matrix"]) for d in done] == [(0, "v"), (1, "mlp_in"), (1, "mlp_out")]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight",
                       "transformer.h.1.mlp.c_proj.weight"}
    # only V's columns of the fused Conv1D changed
    diff = (model.transformer.h[0].attn.c_attn.weight != before["transformer.h.0.attn.c_attn.weight"]).any(0)
    assert not diff[:64].any() and diff[64:].any()


def test_bad_rates_modules_layers():
    arch = get_arch(tiny_model("opt"))
    with pytest.raises(LeantuneError, match="outside"):
        apply_edits(arch, [Edit(0, "mlp", 1.0)], SVDCache(arch))
    with pytest.raises(LeantuneError, match="mlp_gate.*unknown"):
        module_matrices(arch, "mlp_gate")
    with pytest.raises(LeantuneError, match="out of range"):
        apply_edits(arch, [Edit(5, "mlp", 0.5)], SVDCache(arch))


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_reuse_scores_equal_full_forward_of_edited_model(family):
    model = tiny_model(family, vocab_size=len(TOK), attn="sdpa")
    arch = get_arch(model)
    prefix = "text: good fun\nsentiment : positive\n\ntext: awful\nsentiment : negative\n\n"
    queries = [f"text: example number {i} {'!' * i}\nsentiment :" for i in range(7)]
    plan = prepare(TOK, prefix, queries, [[" positive", " negative", " so so"]] * 7)
    runner = LayerReuseScorer(model, arch, plan, batch_size=3, layers={1})
    base = runner.record_baseline()
    torch.testing.assert_close(torch.tensor(base.logprobs), torch.tensor(score(model, plan, 3).logprobs),
                               atol=1e-5, rtol=0)
    cache = SVDCache(arch)
    for edits in ([Edit(1, "mlp", 0.75)], [Edit(1, "attn", 0.5)], [Edit(1, "v", 0.9)]):
        with edited(arch, edits, cache):
            reused = runner.score_from(1).logprobs
            full = score(model, plan, 3).logprobs
        torch.testing.assert_close(torch.tensor(reused), torch.tensor(full), atol=1e-4, rtol=0)
        assert max(abs(a - b) for ra, rb in zip(reused, base.logprobs) for a, b in zip(ra, rb)) > 1e-4


def test_mlp_edit_of_a_mixture_of_experts_model_is_refused_with_the_reason():
    arch = get_arch(tiny_model("mixtral"))
    assert module_matrices(arch, "attn") == ("q", "k", "v", "o")
    with pytest.raises(LeantuneError, match="mixtral has no mlp matrices: .*mixture of experts"):
        module_matrices(arch, "mlp")
