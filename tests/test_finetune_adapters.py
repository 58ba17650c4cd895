"""Saved adapters mean what they say: PEFT loads our LoRA(QV) export with the same logits, a merged model
equals the adapter model, and a saved adapter reloads to the same predictions (fused families too)."""

import pytest
import torch
from peft import PeftModel

from leantune.finetune.adapters import attach
from leantune.finetune.artifacts import export_peft, load_adapter, save_adapter
from leantune.finetune.config import FinetuneConfig
from leantune.finetune.groups import param_groups
from tiny import tiny_input, tiny_model


def _trained(name, method="lora", targets="qv", seed=0):
    model = tiny_model(name, seed=seed, head="seq-cls")
    model.config.pad_token_id = 0
    cfg = FinetuneConfig(targets=targets, method=method, rank=4, alpha=8, dropout=0.0, lr=2e-2, v_lr_ratio=4)
    ad = attach(model, cfg.targets, cfg.method, cfg.rank, cfg.alpha, cfg.dropout)
    opt = torch.optim.AdamW(param_groups(ad, cfg))
    model.train()
    for step in range(3):
        x = tiny_input(seed=step, batch=4, length=6)
        model(input_ids=x, labels=torch.tensor([0, 1, 1, 0])).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval(), ad


def _logits(model, x):
    with torch.no_grad():
        return model(input_ids=x).logits


def _fresh(name):
    base = tiny_model(name, seed=0, head="seq-cls")
    base.config.pad_token_id = 0
    return base


def test_lora_qv_on_llama_loads_in_peft_with_the_same_logits(tmp_path):
    model, ad = _trained("llama")
    x = tiny_input(seed=9, batch=3, length=8)
    ours = _logits(model, x)
    export_peft(ad, tmp_path / "peft", base_model="tiny-llama")
    peft_model = PeftModel.from_pretrained(_fresh("llama"), str(tmp_path / "peft")).eval()
    torch.testing.assert_close(_logits(peft_model, x), ours)
    # the export holds LoRA on exactly the q_proj and v_proj modules the map names, and the head
    targets = set(peft_model.peft_config["default"].target_modules)
    assert targets == {f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qv"}
    assert not torch.equal(ours, _logits(_fresh("llama"), x))  # training did change the predictions


@pytest.mark.parametrize("name,method", [("llama", "lora"), ("llama", "dora"), ("gpt2", "lora"),
                                         ("gpt2", "dora"), ("gpt2", "full"), ("gpt_neox", "lora"),
                                         ("falcon-grouped", "dora"), ("bert", "full")])
def test_saved_adapter_reloads_and_merges_to_the_same_predictions(tmp_path, name, method):
    model, ad = _trained(name, method)
    x = tiny_input(seed=9, batch=3, length=8)
    ours = _logits(model, x)
    save_adapter(ad, tmp_path / "adapter", {"base_model": "unused", "num_labels": 2, "pad_token_id": 0})
    reloaded, ad2, meta = load_adapter(tmp_path / "adapter", model=_fresh(name))
    assert (meta["targets"], meta["method"]) == ("qv", method)
    torch.testing.assert_close(_logits(reloaded, x), ours, rtol=0, atol=0)  # same tensors, same graph
    merged = ad2.merge()
    assert not any(p.requires_grad for p in merged.parameters())
    assert not any("leantune" in n or "parametrizations" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, x), ours)


def test_merge_of_the_trained_model_itself_keeps_its_logits():
    model, ad = _trained("phi3", "lora")
    x = tiny_input(seed=5)
    before = _logits(model, x)
    torch.testing.assert_close(_logits(ad.merge(), x), before)


def test_adapter_for_another_target_set_is_refused(tmp_path):
    from leantune.errors import LeantuneError

    _, ad = _trained("llama", "lora")
    save_adapter(ad, tmp_path / "a", {"base_model": "unused", "num_labels": 2})
    model = _fresh("llama")
    other = attach(model, "qkv", "lora", 4, 8, 0.0)
    from safetensors.torch import load_file

    with pytest.raises(LeantuneError, match="missing.*layers.0.k.lora_A"):
        other.load_state_dict(load_file(str(tmp_path / "a" / "adapter.safetensors")))


def _reference_projection(module, x):
    """The adapter written out per part, independently of LoraRows.forward: the original projection, plus
    for each targeted part ``scale * B A dropout(x)`` (DoRA: ``(s-1) W0 x' + s * that``) on its own rows."""
    lora = module.leantune_lora
    out = type(module).forward(module, x)  # the class's own forward, bias included
    xd = torch.nn.functional.dropout(x, lora.p, lora.training)
    adds = []
    for name in lora.names:
        add = xd @ lora.lora_A[name].T @ lora.lora_B[name].T * lora.scale
        if lora.dora:
            w0 = lora.base_rows(module.weight, name)
            s = lora.magnitude[name] / (w0 + lora.delta(name)).norm(dim=1).detach()
            add = (s - 1) * (xd @ w0.T) + s * add
        adds.append(add)
    return out.index_add(-1, lora.all_rows, torch.cat(adds, dim=-1))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("method", ["lora", "dora"])
@pytest.mark.parametrize("name", ["llama", "gpt2", "gpt_neox", "falcon-grouped"])
def test_lean_forward_matches_the_per_part_formula_with_gradients(name, method, dropout):
    from leantune.arch import get_arch

    model = _fresh(name)
    attach(model, "qv", method, rank=4, alpha=8, dropout=dropout)
    module = get_arch(model).matrix(1, "q").module
    lora = module.leantune_lora.train()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a trained-looking adapter: B != 0, magnitudes off the initial norms
        for p in lora.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    in_features = module.weight.shape[0 if lora.transposed else 1]
    x = torch.randn(2, 5, in_features, generator=g, requires_grad=True)
    results = []
    for fn in (module, lambda x: _reference_projection(module, x)):
        torch.manual_seed(7)  # the same dropout mask for both
        y = fn(x)
        grads = torch.autograd.grad((y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).sum(),
                                    [x, *lora.parameters()])
        results.append((y, grads))
    (y, grads), (y_ref, grads_ref) = results
    torch.testing.assert_close(y, y_ref)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)
