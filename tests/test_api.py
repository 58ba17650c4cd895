"""The public API: groups found through the architecture map on plain, PEFT and leantune-adapted models;
AdaptedModel checkpoints hold only adapter keys; one set of adapter defaults; the registries."""

import pytest
import torch
import transformers as tf

import leantune
from leantune import AdapterConfig, attach_adapters, create_optimizer, get_arch, qv_param_groups
from leantune.errors import LeantuneError
from leantune.finetune.adapters import attach
from leantune.finetune.config import FinetuneConfig
from leantune.finetune.groups import param_groups
from tiny import tiny_input, tiny_model


def _seq_cls(name, seed=0):
    model = tiny_model(name, seed=seed, head="seq-cls")
    model.config.pad_token_id = 0
    return model


def _by_name(groups):
    return {g["name"]: (g["lr"], g["weight_decay"], {id(p) for p in g["params"]}) for g in groups}


def test_public_names_import_lazily():
    import subprocess
    import sys

    code = "import sys, leantune; assert 'torch' not in sys.modules; print(len(leantune.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 15
    for name in leantune.__all__:
        assert getattr(leantune, name) is not None, name


@pytest.mark.parametrize("method", ["full", "lora", "dora"])
@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "llama", "bert"])
def test_groups_found_from_the_model_equal_the_recorded_ones(name, method):
    """qv_param_groups on a bare model carrying leantune adapters (no record at hand) finds exactly the groups
    that the attach() record gives, fused slices included."""
    model = _seq_cls(name)
    ad = attach(model, "qkv", method, 4, 8.0, 0.0)
    cfg = FinetuneConfig(targets="qkv", method=method, lr=2e-4, v_lr_ratio=8.0, k_lr_ratio=0.5, head_lr=1e-3,
                         loraplus_ratio=16.0, weight_decay=0.1)
    recorded = _by_name(param_groups(ad, cfg))
    found = _by_name(qv_param_groups(model, 2e-4, v_ratio=8.0, k_ratio=0.5, head_lr=1e-3, loraplus_ratio=16.0,
                                     weight_decay=0.1))
    assert found == recorded
    v = "v.lora_B" if method != "full" else "v"
    q = "q.lora_B" if method != "full" else "q"
    assert found[v][0] == 8.0 * found[q][0]


def test_plain_model_full_q_v_groups_hold_exactly_the_arch_tensors():
    model = _seq_cls("llama")
    arch = get_arch(model)
    model.requires_grad_(False)
    for m in arch.matrices(names=("q", "v")):
        m.weight.requires_grad_(True)
    model.model.norm.weight.requires_grad_(True)  # something outside attention: lr, no decay
    groups = _by_name(qv_param_groups(model, 1e-3, v_ratio=4.0, weight_decay=0.01))
    assert set(groups) == {"q", "v", "all.no_decay"}
    assert groups["v"][2] == {id(arch.matrix(i, "v").weight) for i in range(arch.num_layers)}
    assert groups["q"][2] == {id(arch.matrix(i, "q").weight) for i in range(arch.num_layers)}
    assert groups["v"][0] == 4.0 * groups["q"][0] and groups["v"][1] == 0.01
    assert groups["all.no_decay"] == (1e-3, 0.0, {id(model.model.norm.weight)})


def test_every_trainable_tensor_is_in_exactly_one_group():
    model = _seq_cls("opt")
    model.requires_grad_(True)  # plain full fine-tuning
    groups = qv_param_groups(model, 1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len([p for p in model.parameters() if p.requires_grad])
    arch = get_arch(model)
    v = next(g for g in groups if g["name"] == "v")
    assert {id(p) for p in v["params"]} == {id(arch.matrix(i, "v").weight) for i in range(2)}


def test_a_whole_fused_weight_cannot_get_a_v_ratio():
    model = _seq_cls("gpt2")
    model.requires_grad_(False)
    get_arch(model).matrix(0, "v").weight.requires_grad_(True)  # c_attn: Q, K and V rows in one tensor
    with pytest.raises(LeantuneError, match="q/k/v in one weight and it trains as one tensor"):
        qv_param_groups(model, 1e-3)


@pytest.mark.parametrize("dora", [False, True])
def test_peft_lora_groups_come_from_the_arch_map(dora):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_seq_cls("llama"), LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, use_dora=dora,
                                                         target_modules=["q_proj", "v_proj"]))
    groups = _by_name(qv_param_groups(model, 1e-3, v_ratio=4.0, loraplus_ratio=2.0, weight_decay=0.1))
    arch = get_arch(model)
    for name, ratio in (("q", 1.0), ("v", 4.0)):
        mods = [arch.matrix(i, name).module for i in range(arch.num_layers)]
        assert groups[f"{name}.lora_A"] == (1e-3 * ratio, 0.1, {id(m.lora_A["default"].weight) for m in mods})
        assert groups[f"{name}.lora_B"] == ((1e-3 * 2.0) * ratio, 0.1, {id(m.lora_B["default"].weight) for m in mods})
        if dora:
            assert groups[f"{name}.magnitude"] == (
                1e-3 * ratio, 0.0, {id(m.lora_magnitude_vector["default"].weight) for m in mods})
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set().union(*(g[2] for g in groups.values())) == trainable
    assert groups["head"][0] == 1e-3  # modules_to_save copy of the classifier
    assert not any(k.startswith("k") for k in groups)


def test_peft_lora_on_mlp_and_embeddings_trains_at_lr_with_loraplus():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_seq_cls("llama"), LoraConfig(task_type="SEQ_CLS", r=4,
                                                         target_modules=["v_proj", "gate_proj", "embed_tokens"]))
    groups = _by_name(qv_param_groups(model, 1e-3, v_ratio=4.0, loraplus_ratio=8.0))
    arch = get_arch(model)
    gates = [arch.matrix(i, "mlp_gate").module for i in range(arch.num_layers)]
    assert groups["mlp_gate.lora_B"] == (8e-3, 0.0, {id(m.lora_B["default"].weight) for m in gates})
    assert groups["v.lora_B"][0] == 4.0 * 8e-3
    emb = model.get_base_model().model.embed_tokens
    assert groups["all.lora_B"] == (8e-3, 0.0, {id(emb.lora_embedding_B["default"])})


def test_peft_lora_on_a_fused_qkv_is_refused():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_seq_cls("gpt2"), LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["c_attn"],
                                                        fan_in_fan_out=True))
    with pytest.raises(LeantuneError, match="attach_adapters"):
        create_optimizer(model, lr=1e-3)


def test_create_optimizer_passes_kwargs_and_keeps_group_lrs():
    model = attach_adapters(_seq_cls("gpt2"))
    opt = create_optimizer(model, torch.optim.SGD, lr=0.1, v_ratio=2.0, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["v.lora_A"] == 0.2 and lrs["q.lora_A"] == 0.1
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


def test_adapter_defaults_are_the_cli_defaults():
    a, f = AdapterConfig(), FinetuneConfig()
    assert (a.targets, a.method, a.rank, a.alpha, a.dropout) == (f.targets, f.method, f.rank, f.alpha, f.dropout)
    model = attach_adapters(_seq_cls("llama"))
    assert (model.adapted.targets, model.adapted.method, model.adapted.dropout) == ("qv", "lora", 0.05)


@pytest.mark.parametrize("method", ["full", "lora", "dora"])
def test_trainer_checkpoint_holds_only_adapter_keys_and_resumes(tmp_path, method):
    from safetensors.torch import load_file

    model = attach_adapters(_seq_cls("gpt2"), method=method, rank=4, dropout=0.0)
    private = [k for k in model.model.state_dict() if "leantune_lora" in k or "parametrizations" in k]
    assert private  # they exist inside the wrapped model...
    keys = set(model.state_dict())
    # the trained tensors and the manifest (so that a Trainer's folder is an adapter `leantune merge` reads)
    assert keys == {t.key for t in model.trained} | {"leantune_adapter.json"}
    assert not any("leantune_lora" in k or "parametrizations" in k for k in keys)  # ...but never leave it
    x = tiny_input(batch=8, length=6)
    rows = [{"input_ids": x[i % 2], "labels": i % 2} for i in range(16)]
    args = tf.TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8,
                                report_to="none", save_strategy="no")
    trainer = tf.Trainer(model=model, args=args, train_dataset=rows,
                         optimizers=(create_optimizer(model, lr=1e-2), None))
    trainer.train()
    assert "eval_loss" in trainer.evaluate(rows)
    trainer.save_model(str(tmp_path / "ckpt"))
    saved = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert set(saved) == keys
    # a fresh model with the same adapters takes the checkpoint back and computes the same logits
    other = attach_adapters(_seq_cls("gpt2", seed=0), method=method, rank=4, dropout=0.0)
    other.load_state_dict(saved)
    model.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(input_ids=x).logits, model(input_ids=x).logits)


def test_adapted_model_behaves_as_the_model():
    import inspect

    base = _seq_cls("bert")
    model = attach_adapters(base, AdapterConfig(targets=("q", "v"), method="lora", rank=4, alpha=8))
    assert model.config is base.config and get_arch(model).model is base
    assert "input_ids" in inspect.signature(model.forward).parameters  # what the Trainer reads
    from transformers.utils.generic import find_labels

    assert find_labels(type(model)) == ["labels"]  # without it the Trainer would compute no eval loss
    x = tiny_input()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, base(input_ids=x).logits)
    assert model.num_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_save_pretrained_writes_the_cli_adapter_format(tmp_path):
    from leantune.finetune.artifacts import load_adapter

    d = tmp_path / "model"
    _seq_cls("llama").save_pretrained(d)
    model = attach_adapters(leantune.load_model(str(d), head="seq-cls"), rank=4, dropout=0.0)
    with torch.no_grad():
        for t in model.trained:
            t.param.normal_()
    model.save_pretrained(tmp_path / "adapter")
    loaded, adapted, meta = load_adapter(tmp_path / "adapter")
    assert meta["base_model"] == str(d) and meta["method"] == "lora"
    x = tiny_input()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits)


def test_strategy_and_method_registries():
    from leantune.finetune.methods import METHODS
    from leantune.svd.strategies import STRATEGIES, make_strategy

    assert {"paper", "grid", "greedy"} <= set(STRATEGIES)
    assert make_strategy("paper", top_k=5, seed=1).top_k == 5  # options it does not name are not passed
    with pytest.raises(LeantuneError, match="unknown strategy"):
        make_strategy("nope")
    assert {"full", "lora", "dora"} <= set(METHODS)
    with pytest.raises(LeantuneError, match="unknown method"):
        attach_adapters(_seq_cls("llama"), method="nope")


def test_apply_edit_takes_a_record_a_list_or_a_file(tmp_path):
    import json

    from leantune import Edit, apply_edit
    from leantune.svd.edits import edit_record

    model = tiny_model("llama")
    ref = tiny_model("llama")
    record = edit_record(model, "tiny", [Edit(1, "mlp", 0.5)], "float64")
    (tmp_path / "edit.json").write_text(json.dumps(record))
    done = apply_edit(model, str(tmp_path / "edit.json"))
    assert [d["matrix"] for d in done["matrices"]] == [m["matrix"] for m in record["matrices"]]
    for edit in (record, [Edit(1, "mlp", 0.5)], [{"layer": 1, "module": "mlp", "rate": 0.5}]):
        other = tiny_model("llama")
        apply_edit(other, edit, svd_dtype="float64")
        for a, b in zip(other.parameters(), model.parameters()):
            assert torch.equal(a, b)
    assert not torch.equal(get_arch(ref).matrix(1, "mlp_in").read(), get_arch(model).matrix(1, "mlp_in").read())
