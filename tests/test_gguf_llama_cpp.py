"""Written GGUF files run in llama.cpp itself (llama-cpp-python, `make llama`) with leantune's logits.

Skipped, saying so, where llama-cpp-python is not installed (CI never builds it). The tiny Llama of
tests/gguf_writer.py runs in llama.cpp with transformers' logits (F32: within 1e-4), so any difference
after an edit is the writer's: a Q or K row out of llama.cpp's order changes every attention score.
"""

import json

import gguf
import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (`make llama` builds it)")

from gguf_writer import tiny_llama, write_gguf  # noqa: E402
from leantune.arch import get_arch  # noqa: E402
from leantune.gguf_write import save_gguf  # noqa: E402
from leantune.gguf_write import write_gguf as write_gguf_file  # noqa: E402
from leantune.models import load_model  # noqa: E402
from leantune.recipes.icl_apply import icl_apply  # noqa: E402
from leantune.svd.api import apply_edit  # noqa: E402
from leantune.svd.edits import Edit, edit_record  # noqa: E402

IDS = [3, 5, 7, 11, 13, 2, 40, 60, 9, 21]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANTUNE_CACHE", str(tmp_path / "cache"))


def llama_cpp_logits(path) -> np.ndarray:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, n_threads=1, verbose=False)
    try:
        llm.eval(IDS)
        return np.array(llm.scores[:len(IDS)])
    finally:
        llm.close()


def leantune_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].numpy()


def test_an_svd_edit_written_as_f32_runs_in_llama_cpp_with_the_edited_logits(tmp_path):
    src = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    model = load_model(str(src), head="causal-lm", dtype="float32")
    np.testing.assert_allclose(llama_cpp_logits(src), leantune_logits(model), atol=1e-4)  # the reader agrees
    edit = tmp_path / "edit.json"
    edit.write_text(json.dumps(edit_record(model, str(src), [Edit(0, "attn", 0.5), Edit(1, "mlp", 0.5)], "float32")))
    apply_edit(model, str(edit))
    icl_apply(model=str(src), edit=str(edit), out_gguf=str(tmp_path / "edited.gguf"), gguf_type="f32")
    got = llama_cpp_logits(tmp_path / "edited.gguf")
    np.testing.assert_allclose(got, leantune_logits(model), atol=1e-4)
    assert np.abs(got - llama_cpp_logits(src)).max() > 1e-2  # the edit changed what llama.cpp computes


def test_a_merged_delta_on_q_and_k_runs_in_llama_cpp(tmp_path):
    """A delta is not a truncation: it only comes out right if the whole new matrix is permuted."""
    src = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    model = load_model(str(src), head="causal-lm", dtype="float32")
    torch.manual_seed(1)
    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(src)).tensors}
    naive = {}  # the delta added to llama.cpp's stored (permuted) rows as if they were transformers' rows
    for name, tensor in (("q", "blk.1.attn_q.weight"), ("k", "blk.1.attn_k.weight")):
        m = get_arch(model).matrix(1, name)
        delta = 0.2 * torch.randn(m.shape[0], 2) @ torch.randn(2, m.shape[1])  # a rank-2 update, as LoRA merges
        m.write(m.read() + delta)
        naive[tensor] = stored[tensor] + delta.numpy()
    save_gguf(model, src, tmp_path / "merged.gguf", [(1, "q"), (1, "k")], "f32")
    want = leantune_logits(model)
    np.testing.assert_allclose(llama_cpp_logits(tmp_path / "merged.gguf"), want, atol=5e-4)
    write_gguf_file(src, tmp_path / "naive.gguf", naive, "f32")
    assert np.abs(llama_cpp_logits(tmp_path / "naive.gguf") - want).max() > 1e-2  # llama.cpp sees the difference


def test_keep_on_a_q8_0_source_runs_in_llama_cpp_as_leantune_reads_it(tmp_path):
    src = write_gguf(tiny_llama(), tmp_path / "tiny-q8.gguf", quant="Q8_0")
    model = load_model(str(src), head="causal-lm", dtype="float32")
    edit = tmp_path / "edit.json"
    edit.write_text(json.dumps(edit_record(model, str(src), [Edit(1, "attn", 0.5)], "float32")))
    icl_apply(model=str(src), edit=str(edit), out_gguf=str(tmp_path / "kept.gguf"))
    reread = load_model(str(tmp_path / "kept.gguf"), head="causal-lm", dtype="float32")
    # llama.cpp multiplies Q8_0 weights with activations rounded to 8 bits too: close, not equal
    np.testing.assert_allclose(llama_cpp_logits(tmp_path / "kept.gguf"), leantune_logits(reread), atol=2e-2)
