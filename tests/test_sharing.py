"""What leantune saves, the user's other tools load correctly or refuse loudly (issue 19).

Each test is what a user does with a saved folder outside leantune: plain transformers on a factorized
model, PEFT's AutoPeftModel on an exported adapter, the names recorded for the base model.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers as tf

from leantune.cli import main
from leantune.models import gpt2_tokenizer_offline, load_model, load_tokenizer
from tiny import save_tiny_lm

TOK = gpt2_tokenizer_offline()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("llama"), "llama", layers=2, tokenizer=TOK)


@pytest.fixture(scope="module")
def factorized(tiny_llama, tmp_path_factory):
    """A dense and a factorized export of the same edit, through the CLI."""
    work = tmp_path_factory.mktemp("fact")
    from leantune.svd.edits import Edit, edit_record

    model = load_model(str(tiny_llama), head="causal-lm")
    edit = edit_record(model, str(tiny_llama), [Edit(1, "mlp", 0.9), Edit(0, "v", 0.5)], "float32")
    (work / "edit.json").write_text(json.dumps(edit))
    for name, extra in (("dense", []), ("fact", ["--factorize"])):
        assert main(["icl", "apply", "--model", str(tiny_llama), "--edit", str(work / "edit.json"),
                     "--out", str(work / name), "--quiet", *extra]) == 0
    return work


def test_plain_transformers_refuses_a_factorized_folder(factorized):
    fact = factorized / "fact"
    with pytest.raises(ValueError, match="load this folder with leantune"):
        tf.AutoModelForCausalLM.from_pretrained(fact)
    with pytest.raises(ValueError, match="load this folder with leantune"):
        tf.AutoConfig.from_pretrained(fact)
    # the concrete class only warns about a foreign model type; the weights' name stops it
    with pytest.raises(OSError):
        tf.LlamaForCausalLM.from_pretrained(fact)


def test_leantune_loads_a_factorized_folder_with_the_dense_logits(factorized):
    dense = tf.AutoModelForCausalLM.from_pretrained(factorized / "dense").eval()
    fact = load_model(str(factorized / "fact"), head="causal-lm")
    tok = load_tokenizer(str(factorized / "fact"))  # the tokenizer saved beside it still loads
    x = torch.tensor([tok("the film was a quiet triumph").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(fact(x).logits, dense(x).logits, atol=1e-4, rtol=1e-4)


def test_a_factorized_folder_written_before_the_guard_still_loads(factorized, tmp_path):
    """Older folders hold the real config.json and model.safetensors; leantune reads them as before."""
    from leantune.factorized import read_config

    old = tmp_path / "old"
    shutil.copytree(factorized / "fact", old)
    config = json.loads((old / "config.json").read_text())
    config["model_type"], config["architectures"] = config.pop("leantune_model_type"), \
        config.pop("leantune_architectures")
    (old / "config.json").write_text(json.dumps(config))
    (old / "leantune_factorized.safetensors").rename(old / "model.safetensors")
    assert read_config(old).model_type == "llama"
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(load_model(str(old), head="causal-lm")(x).logits,
                                   load_model(str(factorized / "fact"), head="causal-lm")(x).logits)


# --- the base model as a user names it elsewhere -----------------------------------------------------------
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    """A few LoRA steps on the real MiniLM through the CLI, named by its alias."""
    from ft_helpers import sentences, write_csv

    tmp = tmp_path_factory.mktemp("minilm")
    train = write_csv(tmp / "train.csv", sentences(32, seed=1))
    out = tmp / "out"
    assert main(["finetune", "--model", "minilm", "--train-file", str(train), "--text-columns", "text",
                 "--rank", "2", "--max-steps", "2", "--batch-size", "8", "--max-length", "16", "--dropout", "0",
                 "--quiet", "--out", str(out)]) == 0
    return out


def test_cli_adapters_record_the_hub_id_of_an_alias(minilm_run, tmp_path):
    meta = json.loads((minilm_run / "adapter" / "leantune_adapter.json").read_text())
    assert meta["base_model"] == MINILM_HUB and meta["base_model_source"]["alias"] == "minilm"
    peft_config = json.loads((minilm_run / "peft_adapter" / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == MINILM_HUB
    # leantune reads its own record back offline: the hub id is the installed alias
    assert main(["merge", "--adapter", str(minilm_run / "adapter"), "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert merged["leantune_base_model"]["name"] == MINILM_HUB
    assert merged["leantune_base_model"]["adapter"]["method"] == "lora"


def _fake_hub_cache(cache, repo_id: str, folder) -> None:
    """The layout huggingface_hub downloads into, holding a local copy of ``folder``: offline, transformers
    loads ``repo_id`` from it exactly as it would after a download."""
    snapshot = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
    shutil.copytree(folder, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)


def test_auto_peft_model_loads_the_exported_adapter(minilm_run, tmp_path):
    from peft import AutoPeftModelForSequenceClassification

    from leantune.finetune.artifacts import load_adapter
    from leantune.models import resolve

    peft_dir = str(minilm_run / "peft_adapter")
    # offline without the model in the HF cache: transformers' one error (PEFT asks for the hub id recorded)
    with pytest.raises(OSError, match="couldn't find them in the cached files"):
        AutoPeftModelForSequenceClassification.from_pretrained(peft_dir, cache_dir=str(tmp_path / "empty"))
    # with the hub's files in the cache (what a download leaves), it loads and predicts as leantune does
    _fake_hub_cache(tmp_path / "hub", MINILM_HUB, resolve("minilm"))
    peft_model = AutoPeftModelForSequenceClassification.from_pretrained(peft_dir, cache_dir=str(tmp_path / "hub"))
    ours, _, _ = load_adapter(minilm_run / "adapter")
    x = torch.tensor([[101, 2023, 3185, 2001, 2307, 102]])
    with torch.no_grad():
        torch.testing.assert_close(peft_model.eval()(input_ids=x).logits, ours(input_ids=x).logits)


def test_library_records_name_an_alias_by_its_hub_id_never_the_gguf_cache():
    from peft import LoraConfig, get_peft_model

    from leantune.models import base_model_record, portable_name, resolve
    from leantune.svd.edits import edit_record, Edit

    lm = load_model("smollm2-135m", head="causal-lm")
    cache = resolve("smollm2-135m")  # the converted GGUF in leantune's cache
    assert lm.name_or_path == lm.config.name_or_path == SMOLLM_HUB
    assert portable_name(cache) == SMOLLM_HUB and portable_name("minilm") == MINILM_HUB
    record = base_model_record("smollm2-135m")
    assert record["gguf"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and len(record["gguf"]["sha256"]) == 64
    edit = edit_record(lm, None, [Edit(29, "mlp", 0.5)], "float32")
    assert edit["base_model"]["name"] == SMOLLM_HUB and edit["base_model"]["gguf"] == record["gguf"]
    peft = get_peft_model(lm, LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"]))
    assert peft.peft_config["default"].base_model_name_or_path == SMOLLM_HUB
    assert cache not in json.dumps(edit)


def test_a_users_gguf_is_recorded_by_its_file_never_the_cache_folder(tmp_path, monkeypatch):
    from gguf_writer import tiny_llama as tiny_gguf_llama, write_gguf
    from leantune.models import portable_name, resolve

    monkeypatch.setenv("LEANTUNE_CACHE", str(tmp_path / "cache"))
    gguf = write_gguf(tiny_gguf_llama(), tmp_path / "mine.gguf")
    model = load_model(str(gguf), head="causal-lm")
    cache = resolve(str(gguf))
    assert cache.startswith(str(tmp_path / "cache"))
    source = json.loads((Path(cache) / "leantune_source.json").read_text())
    assert source["base_model"] == model.name_or_path == portable_name(cache) == str(gguf)
    assert model.leantune_base_model["gguf"]["file"] == "mine.gguf"


def test_edited_models_record_their_base_in_config_json(factorized, tiny_llama):
    for folder in ("dense", "fact"):
        base = json.loads((factorized / folder / "config.json").read_text())["leantune_base_model"]
        assert base["name"] == str(tiny_llama) and base["edit"][0] == {"layer": 1, "module": "mlp", "rate": 0.9}


def test_local_folders_are_recorded_as_absolute_paths(tiny_llama, monkeypatch):
    from leantune.models import portable_name

    monkeypatch.chdir(tiny_llama.parent)
    assert portable_name(tiny_llama.name) == str(tiny_llama)
    assert load_model(tiny_llama.name, head="causal-lm").name_or_path == str(tiny_llama)
    assert portable_name("gpt2") == "gpt2"  # a hub id stays as it is


def test_offline_a_recorded_hub_id_resolves_to_the_installed_alias(monkeypatch, tmp_path):
    from leantune.models import resolve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(SMOLLM_HUB) == resolve("smollm2-135m")
    assert resolve(MINILM_HUB) == resolve("minilm")


# --- adapted models save, push and checkpoint as adapters, and refuse the rest -------------------------------
def _adapted_seq_cls(tmp_path, method="lora"):
    """A tiny Llama classifier saved locally, loaded through leantune, with trained-looking adapters."""
    from ft_helpers import model_dir
    from leantune import attach_adapters

    base_dir = model_dir(tmp_path, "llama")
    model = attach_adapters(load_model(str(base_dir), head="seq-cls"), method=method, rank=4, dropout=0.0)
    with torch.no_grad():
        for t in model.trained:
            t.param.normal_(0, 0.1)
    return base_dir, model.eval()


X = torch.tensor([[2, 7, 9, 11, 30, 3], [2, 15, 17, 3, 0, 0]])


def _logits(model):
    with torch.no_grad():
        return model(input_ids=X).logits


def test_save_adapters_writes_leantune_and_peft_formats_in_one_folder(tmp_path):
    from peft import PeftModel

    from leantune import load_adapters, save_adapters

    base_dir, model = _adapted_seq_cls(tmp_path)
    out = save_adapters(model, tmp_path / "adapter")
    assert {"adapter.safetensors", "leantune_adapter.json", "adapter_config.json",
            "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir)
    again = load_adapters(None, out)  # the base model recorded in the adapter
    torch.testing.assert_close(_logits(again), _logits(model))
    fresh = load_model(str(base_dir), head="seq-cls")
    torch.testing.assert_close(_logits(PeftModel.from_pretrained(fresh, str(out)).eval()), _logits(model))
    # a method the PEFT export does not hold (DoRA here) saves leantune's files only
    dora = _adapted_seq_cls(tmp_path / "d", method="dora")[1]
    assert not (save_adapters(dora, tmp_path / "dora") / "adapter_config.json").exists()


def test_push_to_hub_uploads_the_adapter_never_the_base_model(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from leantune import load_adapters

    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["repo"] = repo_id

    def upload_folder(self, *, repo_id, folder_path, **kw):  # the mocked hub keeps a copy of what it was given
        shutil.copytree(folder_path, tmp_path / "hub" / repo_id)
        return "commit"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    _, model = _adapted_seq_cls(tmp_path)
    assert model.push_to_hub("me/tiny-adapter") == "commit" and calls["repo"] == "me/tiny-adapter"
    uploaded = tmp_path / "hub" / "me" / "tiny-adapter"
    assert not (uploaded / "model.safetensors").exists() and (uploaded / "leantune_adapter.json").is_file()
    torch.testing.assert_close(_logits(load_adapters(None, uploaded)), _logits(model))


def test_other_base_model_attributes_are_refused(tmp_path):
    from leantune.finetune.api import AdaptedModelAttributeError

    _, model = _adapted_seq_cls(tmp_path)
    assert model.config.num_labels == 2 and model.device.type == "cpu"  # what describes the model answers
    for name in ("resize_token_embeddings", "tie_weights", "add_adapter"):  # they would act on the base model
        assert hasattr(model.get_base_model(), name)
        with pytest.raises(AdaptedModelAttributeError, match=f"get_base_model\\(\\).{name}"):
            getattr(model, name)
    assert getattr(model, "not_an_attribute", None) is None


def _rows():
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(5, 37, (8,), generator=g), "labels": i % 2} for i in range(16)]


def _trainer(model, out, steps, **kw):
    from leantune import create_optimizer

    args = tf.TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=4,
                                lr_scheduler_type="constant", report_to="none", save_strategy="steps", save_steps=2,
                                seed=0, disable_tqdm=True, **kw)
    return tf.Trainer(model=model, args=args, train_dataset=_rows(), optimizers=(create_optimizer(model, lr=1e-2), None))


def test_trainer_save_model_then_merge_and_resume(tmp_path):
    from leantune import attach_adapters, load_adapters

    base_dir, _ = _adapted_seq_cls(tmp_path)

    def fresh():
        torch.manual_seed(0)
        return attach_adapters(load_model(str(base_dir), head="seq-cls"), rank=4, dropout=0.0)

    model = fresh()
    trainer = _trainer(model, tmp_path / "run", 4)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    model.eval()
    # `leantune merge` reads the Trainer's folder and writes a plain model with the adapted predictions
    assert main(["merge", "--adapter", str(tmp_path / "final"), "--out", str(tmp_path / "merged")]) == 0
    merged = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(_logits(merged), _logits(model))
    torch.testing.assert_close(_logits(load_adapters(None, tmp_path / "run" / "checkpoint-4")), _logits(model))
    # a run resumed from its step-2 checkpoint ends where the uninterrupted one did
    resumed = fresh()
    _trainer(resumed, tmp_path / "run", 4).train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    torch.testing.assert_close(_logits(resumed.eval()), _logits(model))


# --- the right head, or one clear error ------------------------------------------------------------------------
def test_load_model_takes_the_head_the_checkpoint_was_saved_with(tiny_llama, tmp_path):
    from leantune.errors import LeantuneError

    assert type(load_model(str(tiny_llama))).__name__ == "LlamaForCausalLM"
    assert type(load_model("minilm")).__name__ == "BertModel"  # saved as a bare encoder
    config = json.loads((tiny_llama / "config.json").read_text())
    config.pop("architectures")
    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama, bare)
    (bare / "config.json").write_text(json.dumps(config))
    with pytest.raises(LeantuneError, match="pass head=: causal-lm for evaluate_icl"):
        load_model(str(bare))


def test_evaluate_icl_on_a_base_model_says_what_to_pass():
    from leantune import evaluate_icl
    from leantune.errors import LeantuneError

    tok = load_tokenizer("lab-icl")
    with pytest.raises(LeantuneError, match=r"base model without an LM head \(GPT2Model\); load the model with "
                                            r"leantune.load_model\(name, head='causal-lm'\)"):
        evaluate_icl(load_model("lab-icl", head="base"), tok, "lab:1", shots=1, n_eval=4)
    with pytest.raises(LeantuneError, match="must be a loaded model, got the name 'lab-icl'"):
        evaluate_icl("lab-icl", tok, "lab:1", shots=1, n_eval=4)
    assert evaluate_icl(load_model("lab-icl"), tok, "lab:1", shots=1, n_eval=4)["n"] == 4  # its own head: causal-lm


def test_entry_points_check_what_they_are_handed():
    from leantune import attach_adapters, search_svd
    from leantune.errors import LeantuneError

    classifier = load_model("lab-icl", head="seq-cls", num_labels=2)
    with pytest.raises(LeantuneError, match="sequence classifier.*evaluator='classifier'"):
        search_svd(classifier, load_tokenizer("lab-icl"), "lab:1", shots=1, n_val=4, n_test=4)
    adapted = attach_adapters(classifier)
    with pytest.raises(LeantuneError, match="already carries leantune adapters"):
        attach_adapters(adapted)
    with pytest.raises(LeantuneError, match="needs a transformers model"):
        attach_adapters(torch.nn.Linear(2, 2))


# --- every group's learning rate in the Trainer's logs; lm-eval's numbers on our set-up -----------------------
def test_qv_learning_rate_callback_reaches_the_loggers(tmp_path):
    from transformers import TrainerCallback

    from leantune import QVLearningRateCallback, attach_adapters, create_optimizer

    class Reporter(TrainerCallback):  # stands in for TensorBoard / W&B: what it sees when it is called
        seen: list = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.seen.append(dict(logs))

    _, model = _adapted_seq_cls(tmp_path)
    model = attach_adapters(model.merge(), rank=4)
    args = tf.TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=4,
                                logging_steps=1, lr_scheduler_type="linear", report_to="none", save_strategy="no",
                                disable_tqdm=True)
    trainer = tf.Trainer(model=model, args=args, train_dataset=_rows(), callbacks=[Reporter()],
                         optimizers=(create_optimizer(model, lr=1e-3, v_ratio=4.0), None))
    trainer.callback_handler.callbacks.insert(0, trainer.callback_handler.pop_callback(Reporter))  # a logger
    QVLearningRateCallback.install(trainer)
    trainer.train()
    logs = [s for s in Reporter.seen if "loss" in s]
    assert len(logs) == 4
    for log in logs:  # the Trainer's own learning_rate is the q group's; v's is lambda times it, at every step
        assert log["learning_rate/q.lora_A"] == pytest.approx(log["learning_rate"])
        assert log["learning_rate/v.lora_A"] == pytest.approx(4 * log["learning_rate"])
        assert log["learning_rate/head"] == pytest.approx(log["learning_rate"])
    assert logs[0]["learning_rate"] > logs[-1]["learning_rate"]  # the schedule moved: the rates follow it
    assert trainer.state.log_history[0]["learning_rate/v.lora_A"] == logs[0]["learning_rate/v.lora_A"]


def test_lm_eval_bridge_gives_lm_evals_accuracy_on_our_set_up(tmp_path, monkeypatch):
    from leantune import evaluate_icl
    from leantune import lm_eval as bridge

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model, tok = load_model("lab-icl"), load_tokenizer("lab-icl")
    ours = evaluate_icl(model, tok, "lab:4", shots=1, n_eval=24, seed=1)
    theirs = bridge.evaluate(model, tok, "lab:4", shots=1, n_eval=24, seed=1, batch_size=8, out=tmp_path,
                             log_samples=True)
    assert theirs["n"] == 24 and theirs["task"].num_fewshot == 2  # one demonstration per class, as ours
    assert theirs["accuracy"] == ours["accuracy"] and 0 < ours["accuracy"] < 1


def test_a_causal_lm_adapter_saves_as_a_causal_lm_peft_adapter_and_merges(tiny_llama, tmp_path):
    from peft import AutoPeftModelForCausalLM

    from leantune import attach_adapters, save_adapters

    model = attach_adapters(load_model(str(tiny_llama), head="causal-lm"), rank=2, dropout=0.0, train_head=False)
    with torch.no_grad():
        for t in model.trained:
            t.param.normal_(0, 0.1)
    model.eval()
    out = save_adapters(model, tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["base_model_name_or_path"] == str(tiny_llama)
    x = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        ours = model(input_ids=x).logits
        torch.testing.assert_close(AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()(input_ids=x).logits, ours)
    assert main(["merge", "--adapter", str(out), "--out", str(tmp_path / "merged")]) == 0
    with torch.no_grad():
        merged = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(input_ids=x).logits
    torch.testing.assert_close(merged, ours)
