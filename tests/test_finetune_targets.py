"""Q/V-only training touches exactly Q and V (and the head): W_k, K slices of fused weights, MLP, embeddings
and norms stay bit-identical; the optimizer's groups give lr_V = lambda * lr_Q exactly."""

import pytest
import torch

from leantune.arch import get_arch, head_parameters
from leantune.finetune.adapters import attach
from leantune.finetune.config import FinetuneConfig
from leantune.finetune.groups import param_groups
from tiny import tiny_input, tiny_model

FUSED = ["gpt2", "gpt_neox", "falcon-mq", "falcon-interleaved", "falcon-grouped", "phi3", "bloom"]
UNFUSED = ["llama", "bert", "opt"]


def _train_a_few_steps(model, cfg, steps=3):
    ad = attach(model, cfg.targets, cfg.method, cfg.rank, cfg.alpha, cfg.dropout)
    opt = torch.optim.AdamW(param_groups(ad, cfg))  # weight decay on: it must not leak into frozen rows
    model.train()
    x = tiny_input(batch=4, length=6)
    y = torch.tensor([0, 1, 1, 0])
    for _ in range(steps):
        loss = model(input_ids=x, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return ad


def _seq_cls(name):
    model = tiny_model(name, head="seq-cls")
    model.config.pad_token_id = 0
    return model


@pytest.mark.parametrize("method", ["full", "lora", "dora"])
@pytest.mark.parametrize("name", FUSED + UNFUSED)
def test_qv_training_changes_only_q_and_v_rows(name, method):
    model = _seq_cls(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    arch = get_arch(model)
    qv_rows = {}  # module path -> output rows that belong to Q or V
    for m in arch.matrices(names=["q", "v"]):
        qv_rows.setdefault(m.module_path, []).append(m.row_index())
    head = set(head_parameters(model))
    cfg = FinetuneConfig(targets="qv", method=method, rank=2, alpha=4, dropout=0.0, lr=1e-2, v_lr_ratio=4,
                         weight_decay=0.1)
    ad = _train_a_few_steps(model, cfg)
    ad.merge()
    after = dict(model.named_parameters())
    assert set(after) == set(before)  # merge leaves a plain transformers model with the same tensors
    for n, p in after.items():
        path, _, kind = n.rpartition(".")
        if n in head:
            continue
        if path not in qv_rows or (kind == "bias" and method != "full"):
            assert torch.equal(p, before[n]), f"{name}/{method}: {n} changed"
            continue
        m0 = get_arch(model).matrix(0, "q")
        transposed = m0.transposed and kind == "weight"
        new, old = (p.T, before[n].T) if transposed else (p, before[n])
        rows = torch.cat(qv_rows[path])
        others = torch.ones(new.shape[0], dtype=torch.bool)
        others[rows] = False
        assert torch.equal(new[others], old[others]), f"{name}/{method}: K rows of {n} changed"
    for layer in range(arch.num_layers):
        for part in ("q", "v"):
            m = arch.matrix(layer, part)
            old = before[m.module_path + ".weight"]
            old = (old.T if m.transposed else old)[m.row_index()]
            assert not torch.equal(m.read(), old), f"{name}/{method}: layer {layer} {part} did not change"


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "llama"])
def test_fused_weight_storage_stays_frozen_while_training(name):
    # before merging, the stored (fused) weights are untouched: only the trainable parts move
    model = _seq_cls(name)
    arch = get_arch(model)
    k = arch.matrix(0, "k")
    k_before = k.read()
    cfg = FinetuneConfig(targets="qv", method="full", lr=1e-2)
    ad = _train_a_few_steps(model, cfg, steps=2)
    assert torch.equal(get_arch(model).matrix(0, "k").read(), k_before)
    trained = {t.key for t in ad.trained}
    assert {"layers.0.q.weight", "layers.0.v.weight", "layers.1.v.weight"} <= trained
    assert not any(".k." in key for key in trained)


def test_lr_groups_follow_lambda_exactly():
    model = _seq_cls("llama")
    cfg = FinetuneConfig(targets="qkv", method="lora", lr=3e-4, v_lr_ratio=4.0, k_lr_ratio=0.5, loraplus_ratio=16,
                         head_lr=1e-3, weight_decay=0.01)
    ad = attach(model, cfg.targets, cfg.method, cfg.rank, cfg.alpha, cfg.dropout)
    groups = {g["name"]: g for g in torch.optim.AdamW(param_groups(ad, cfg)).param_groups}
    arch = get_arch(model)
    assert groups["q.lora_A"]["lr"] == cfg.lr
    for role in ("lora_A", "lora_B"):
        assert groups[f"v.{role}"]["lr"] == cfg.v_lr_ratio * groups[f"q.{role}"]["lr"]
        assert groups[f"k.{role}"]["lr"] == cfg.k_lr_ratio * groups[f"q.{role}"]["lr"]
    assert groups["q.lora_B"]["lr"] == cfg.loraplus_ratio * groups["q.lora_A"]["lr"]
    assert groups["head"]["lr"] == 1e-3 and groups["head"]["weight_decay"] == 0.01
    # the V group holds exactly the adapters of the map's V matrices, nothing else (no 1-D tensors)
    v_modules = {id(arch.matrix(i, "v").module.leantune_lora.lora_A["v"]) for i in range(arch.num_layers)}
    assert {id(p) for p in groups["v.lora_A"]["params"]} == v_modules
    assert set(head_parameters(model)) == {"score.weight"}
    assert [p for p in groups["head"]["params"]] == [model.score.weight]


def test_full_qv_groups_put_biases_explicitly():
    model = _seq_cls("bert")
    cfg = FinetuneConfig(targets="qv", method="full", lr=1e-4, v_lr_ratio=8.0, weight_decay=0.1)
    groups = {g["name"]: g for g in param_groups(attach(model, "qv", "full"), cfg)}
    assert set(groups) == {"q", "q.bias", "v", "v.bias", "head", "head.bias"}
    assert groups["v"]["lr"] == 8.0 * groups["q"]["lr"] and groups["v.bias"]["lr"] == groups["v"]["lr"]
    assert groups["q.bias"]["weight_decay"] == 0.0 and groups["head.bias"]["weight_decay"] == 0.0
    layer0 = model.bert.encoder.layer[0].attention.self
    assert any(p is layer0.value.bias for p in groups["v.bias"]["params"])
    assert all(p.ndim == 2 for p in groups["v"]["params"])


def test_all_targets_train_everything_at_one_lr():
    model = _seq_cls("gpt2")
    cfg = FinetuneConfig(targets="all", method="full", lr=2e-5, head_lr=1e-3)
    ad = attach(model, "all", "full")
    assert ad.num_trainable == sum(p.numel() for p in model.parameters())
    groups = {g["name"]: g for g in param_groups(ad, cfg)}
    assert groups["all"]["lr"] == 2e-5 and groups["head"]["lr"] == 1e-3
    assert groups["all.no_decay"]["weight_decay"] == 0.0


def test_head_of_each_family_is_found_without_names():
    assert set(head_parameters(_seq_cls("gpt2"))) == {"score.weight"}
    assert set(head_parameters(_seq_cls("bert"))) == {"classifier.weight", "classifier.bias"}
    assert set(head_parameters(_seq_cls("roberta"))) == {"classifier.dense.weight", "classifier.dense.bias",
                                                         "classifier.out_proj.weight", "classifier.out_proj.bias"}
    assert head_parameters(tiny_model("llama", head="base")) == {}
