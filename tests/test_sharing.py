"""What leantune saves, the user's other tools load correctly or refuse loudly (issue 19).

Each test is what a user does with a saved folder outside leantune: plain transformers on a factorized
model, PEFT's AutoPeftModel on an exported adapter, the names recorded for the base model.
"""

import json
import shutil

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
