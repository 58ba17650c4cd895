"""Offline loading: the MiniLM alias, the real GPT-2 vocabulary, dtype handling, safetensors only."""

import pytest
import torch

from leantune.errors import LeantuneError
from leantune.models import gpt2_tokenizer_offline, load_model, resolve
from tiny import tiny_model


def test_gpt2_tokenizer_offline_has_the_real_vocabulary():
    tok = gpt2_tokenizer_offline()
    assert len(tok) == 50257 and tok.eos_token_id == 50256 and tok.pad_token_id == 50256
    # ids of the public GPT-2 vocabulary ("Hello" = 15496, " world" = 995, " positive" = 3967)
    assert tok("Hello world, sentiment : positive").input_ids == [15496, 995, 11, 15598, 1058, 3967]
    assert tok.decode([15496, 995]) == "Hello world"


def test_minilm_alias_loads_real_weights_in_requested_dtype():
    model = load_model("minilm", dtype="bfloat16")
    assert model.config.model_type == "bert" and model.config.num_hidden_layers == 6
    assert model.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    assert not model.training


def test_local_directory_round_trip_uses_safetensors(tmp_path):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = load_model(str(tmp_path), head="causal-lm")
    x = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_pickled_weights_are_refused(tmp_path):
    """A checkpoint with only a pickle (pytorch_model.bin) is never unpickled: loading fails clearly."""
    model = tiny_model("opt")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(LeantuneError, match="cannot load"):
        load_model(str(tmp_path), head="causal-lm")


def test_resolve_errors(tmp_path, monkeypatch):
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(LeantuneError, match="is a file"):
        resolve(str(tmp_path / "file.bin"))
    with pytest.raises(LeantuneError, match="no config.json"):
        resolve(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve("openai-community/gpt2") == "openai-community/gpt2"  # online, hub ids pass through
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline, one that is not in the HF cache is named as missing
    with pytest.raises(LeantuneError, match="model openai-community/gpt2 is not available offline"):
        resolve("openai-community/gpt2")


def test_a_registered_saved_format_is_resolved_and_loaded_like_the_built_in_ones(tmp_path):
    """A new on-disk format is one SavedFormat and a register_format line (here: a folder holding a pointer)."""
    from pathlib import Path

    from leantune.models import FORMATS, SavedFormat, register_format, saved_format

    real = tmp_path / "real"
    model = tiny_model("gpt2")
    model.save_pretrained(real)
    pointing = tmp_path / "pointing"
    pointing.mkdir()
    (pointing / "points-to.txt").write_text(str(real))
    fmt = register_format(SavedFormat("pointer", lambda p: (p / "points-to.txt").is_file() if p.is_dir() else False,
                                      to_pretrained=lambda p, progress: Path((p / "points-to.txt").read_text())))
    try:
        assert saved_format(pointing) is fmt and saved_format(real) is None
        assert resolve(str(pointing)) == str(real)
        loaded = load_model(str(pointing), head="causal-lm")
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
            assert torch.equal(a, b)
    finally:
        FORMATS.remove(fmt)
    assert [f.name for f in FORMATS] == ["gguf", "factorized"]
