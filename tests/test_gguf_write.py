"""Writing GGUF back: a tiny Llama GGUF (F32, Q8_0, Q4_1) edited and written by `icl apply --out-gguf`.

What llama.cpp will read is checked with the gguf package's reader: every metadata key of the source, the
untouched tensors byte for byte, the rewritten ones in llama.cpp's Q/K row order; and reloading the written
file through --model gives the edited model's logits.
"""

import json

import gguf
import numpy as np
import pytest
import torch

from gguf_writer import tiny_llama, write_gguf
from leantune.arch import get_arch
from leantune.cli import main
from leantune.gguf_source import sha256_of
from leantune.gguf_write import save_gguf, to_llama_cpp_layout
from leantune.models import load_model
from leantune.recipes.icl_apply import icl_apply
from leantune.svd.api import apply_edit
from leantune.svd.edits import Edit, edit_record

IDS = torch.tensor([[3, 5, 7, 11, 13, 2, 40, 60]])
EDITS = [Edit(1, "attn", 0.5), Edit(0, "mlp", 0.25)]  # q and k are stored permuted; mlp_out rows are 48 long
EDITED = {f"blk.1.{n}.weight" for n in ("attn_q", "attn_k", "attn_v", "attn_output")} | \
    {f"blk.0.{n}.weight" for n in ("ffn_gate", "ffn_up", "ffn_down")}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANTUNE_CACHE", str(tmp_path / "cache"))


def _source(tmp_path, quant=None):
    src = write_gguf(tiny_llama(), tmp_path / f"tiny-{quant or 'f32'}.gguf", quant=quant)
    model = load_model(str(src), head="causal-lm", dtype="float32")
    edit = tmp_path / "edit.json"
    edit.write_text(json.dumps(edit_record(model, str(src), EDITS, "float32")))
    apply_edit(model, str(edit))
    return src, edit, model


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


def _tensors(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def test_f32_edit_keeps_every_key_and_untouched_tensor_and_reloads_with_the_edited_logits(tmp_path):
    src, edit, edited = _source(tmp_path)
    out = tmp_path / "edited.gguf"
    info = icl_apply(model=str(src), edit=str(edit), out_gguf=str(out), gguf_type="f32")
    assert {t["tensor"] for t in info["gguf"]["tensors"]} == EDITED

    before, after = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(out))
    for name, field in before.fields.items():
        if not name.startswith("GGUF."):
            assert after.fields[name].contents() == field.contents(), name
    assert after.fields["leantune.edit.kind"].contents() == "svd"
    assert after.fields["leantune.edit.layers"].contents() == ["1", "0"]
    assert after.fields["leantune.edit.source_sha256"].contents() == sha256_of(src)

    old, new = _tensors(src), _tensors(out)
    assert list(old) == list(new)  # same tensors, same order
    for name in set(old) - EDITED:
        assert new[name].tensor_type == old[name].tensor_type and bytes(new[name].data) == bytes(old[name].data), name
    arch = get_arch(edited)
    q = arch.matrix(1, "q").read().numpy()
    np.testing.assert_array_equal(np.asarray(new["blk.1.attn_q.weight"].data), to_llama_cpp_layout(q, 4))
    assert not np.array_equal(np.asarray(new["blk.1.attn_q.weight"].data), q)  # the permutation was applied

    reloaded = load_model(str(out), head="causal-lm", dtype="float32")
    torch.testing.assert_close(_logits(reloaded), _logits(edited), rtol=0, atol=1e-6)


@pytest.mark.parametrize("quant, tol", [("Q8_0", 0.02), ("Q4_1", 0.3)])
def test_keep_requantizes_to_the_source_type_within_its_error(tmp_path, quant, tol):
    src, edit, edited = _source(tmp_path, quant)
    out = tmp_path / "kept.gguf"
    info = icl_apply(model=str(src), edit=str(edit), out_gguf=str(out))  # --gguf-type keep is the default
    types = {t["tensor"]: t["type"] for t in info["gguf"]["tensors"]}
    assert types["blk.1.attn_q.weight"] == quant and types["blk.0.ffn_up.weight"] == quant
    assert types["blk.0.ffn_down.weight"] == "F32"  # its rows of 48 were F32 in the source too
    new = _tensors(out)
    arch = get_arch(edited)
    for layer, logical, name, heads in [(1, "q", "attn_q", 4), (1, "k", "attn_k", 2), (1, "v", "attn_v", None)]:
        want = arch.matrix(layer, logical).read().numpy()
        want = to_llama_cpp_layout(want, heads) if heads else want
        t = new[f"blk.{layer}.{name}.weight"]
        got = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(want.shape)
        step = np.abs(want).max() / (127 if quant == "Q8_0" else 15)  # one quantization step of the largest block
        assert np.abs(got - want).max() <= step + 1e-6 and np.abs(got - want).max() < tol
    assert abs(info["gguf"]["bytes"] - info["gguf"]["source_bytes"]) / info["gguf"]["source_bytes"] < 0.02
    reloaded = load_model(str(out), head="causal-lm", dtype="float32")
    torch.testing.assert_close(_logits(reloaded), _logits(edited), rtol=0, atol=tol)


def test_q8_0_on_rows_that_fit_no_block_falls_back_to_f16_and_says_so(tmp_path):
    src, edit, _ = _source(tmp_path)
    info = icl_apply(model=str(src), edit=str(edit), out_gguf=str(tmp_path / "q8.gguf"), gguf_type="q8_0")
    down = next(t for t in info["gguf"]["tensors"] if t["tensor"] == "blk.0.ffn_down.weight")
    assert down["type"] == "F16" and "no multiple of Q8_0's block of 32" in down["fallback"]
    assert {t["type"] for t in info["gguf"]["tensors"] if t["tensor"] != "blk.0.ffn_down.weight"} == {"Q8_0"}


def test_a_merged_delta_is_permuted_with_the_matrix_a_truncation_commutes(tmp_path):
    """llama.cpp's Q rows are permuted: a truncation of the stored (permuted) matrix equals the permuted
    truncation, but a delta computed in transformers' layout must be permuted too, or Q is wrong."""
    src = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    model = load_model(str(src), head="causal-lm", dtype="float32")
    q = get_arch(model).matrix(0, "q")
    w = q.read()
    stored = np.asarray(_tensors(src)["blk.0.attn_q.weight"].data)
    u, s, vh = torch.linalg.svd(w)
    q.write(u[:, :5] @ torch.diag(s[:5]) @ vh[:5])  # a rank-5 truncation
    save_gguf(model, src, tmp_path / "trunc.gguf", [(0, "q")], "f32")
    su, ss, svh = np.linalg.svd(stored)
    np.testing.assert_allclose(np.asarray(_tensors(tmp_path / "trunc.gguf")["blk.0.attn_q.weight"].data),
                               (su[:, :5] * ss[:5]) @ svh[:5], atol=1e-5)

    delta = torch.outer(torch.arange(32.0), torch.ones(32)) * 1e-3  # a merged LoRA-like update, row-dependent
    q.write(w + delta)
    save_gguf(model, src, tmp_path / "merged.gguf", [(0, "q")], "f32")
    written = np.asarray(_tensors(tmp_path / "merged.gguf")["blk.0.attn_q.weight"].data)
    np.testing.assert_allclose(written, stored + to_llama_cpp_layout(delta.numpy(), 4), atol=1e-6)
    assert np.abs(written - (stored + delta.numpy())).max() > 1e-3  # adding the delta unpermuted would differ
    reloaded = load_model(str(tmp_path / "merged.gguf"), head="causal-lm", dtype="float32")
    torch.testing.assert_close(get_arch(reloaded).matrix(0, "q").read(), w + delta, rtol=0, atol=1e-6)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("leantune: error:") == 1 and "Traceback" not in err, err
    return err


def test_a_model_not_from_gguf_is_refused_naming_the_route(tmp_path, capsys):
    folder = tmp_path / "plain"
    tiny_llama().save_pretrained(folder)
    model = load_model(str(folder), head="causal-lm")
    edit = tmp_path / "edit.json"
    edit.write_text(json.dumps(edit_record(model, str(folder), EDITS, "float32")))
    assert main(["icl", "apply", "--model", str(folder), "--edit", str(edit), "--out-gguf", str(tmp_path / "x.gguf")]) == 2
    assert "convert_hf_to_gguf.py" in _one_error(capsys) and not (tmp_path / "x.gguf").exists()


def test_an_unmapped_family_and_an_unwritable_type_are_one_line(tmp_path, capsys):
    src, edit, _ = _source(tmp_path)
    odd = write_gguf(tiny_llama(), tmp_path / "odd.gguf", architecture="qwen2")
    args = ["icl", "apply", "--edit", str(edit), "--out-gguf", str(tmp_path / "x.gguf")]
    assert main([*args[:2], "--model", str(odd), *args[2:]]) == 2
    assert "'qwen2' GGUF" in _one_error(capsys)
    assert main([*args[:2], "--model", str(src), *args[2:], "--gguf-type", "q4_k"]) == 2
    assert "q4_k" in capsys.readouterr().err
    assert main([*args[:2], "--model", str(src), "--edit", str(edit), "--out-gguf", str(src)]) == 2
    assert "source file itself" in _one_error(capsys)
    assert not (tmp_path / "x.gguf").exists()


def test_cli_writes_the_folder_and_the_gguf_together(tmp_path, capsys):
    src, edit, edited = _source(tmp_path)
    out = tmp_path / "both.gguf"
    assert main(["icl", "apply", "--model", str(src), "--edit", str(edit), "--out", str(tmp_path / "dense"),
                 "--out-gguf", str(out), "--gguf-type", "f32"]) == 0
    printed = capsys.readouterr().out
    assert "wrote dense model" in printed and "wrote GGUF" in printed and "7 tensor(s) rewritten as F32" in printed
    folder = load_model(str(tmp_path / "dense"), head="causal-lm")
    torch.testing.assert_close(_logits(folder), _logits(edited), rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(load_model(str(out), head="causal-lm")), _logits(edited), rtol=0, atol=1e-6)
