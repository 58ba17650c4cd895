"""What enters is read once and checked where it enters (issue 21, items 2, 3 and 7): the accepting side.

tests/test_bad_inputs.py holds the refusals (one line, exit 2); this file proves that the same entry
points accept and normalize good input, so a check never turns into a refusal of what is fine.
"""

from __future__ import annotations

import json

import pytest

from leantune.finetune.config import build_config
from leantune.finetune.data import label_text, load_data


@pytest.mark.parametrize("raw, canonical", [(0, "0"), (0.0, "0"), ("0.0", "0"), (" 1 ", "1"), (1.0, "1"),
                                             ("1e1", "10"), (2.5, "2.5"), ("pos", "pos"), ("nan", "nan"),
                                             (True, "true"), (None, None), ("", None), ("  ", None)])
def test_label_text_is_one_canonical_string(raw, canonical):
    assert label_text(raw) == canonical


def test_labels_exported_by_pandas_are_two_classes_not_four(tmp_path):
    rows = [{"text": f"film {i}", "label": [0, 1, 0.0, 1.0, "0.0", "1"][i % 6]} for i in range(24)]
    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_data(build_config(train_file=str(f), text_columns="text", out=str(tmp_path / "out")))
    assert data.labels == ("0", "1")
    assert sorted({r["label"] for r in data.train + data.eval}) == [0, 1]


def test_numeric_labels_are_in_numeric_order(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("text,label\n" + "".join(f"film {i},{[2, 10, 1][i % 3]}\n" for i in range(30)))
    data = load_data(build_config(train_file=str(f), text_columns="text", out=str(tmp_path / "out")))
    assert data.labels == ("1", "2", "10")


def test_config_types_accept_what_each_field_takes():
    from leantune.validate import check_types
    from leantune.recipes.icl_search import SearchConfig

    check_types(SearchConfig, {"calibrate": False, "dry_run": True, "rates": [0, 0.5], "modules": ["mlp", "attn"],
                               "layers": "last4", "shots": 0, "n_test": None, "device_map": {"a": 0}})


def test_a_library_call_gets_the_same_type_check():
    from leantune.errors import LeantuneError
    from leantune.recipes.icl_eval import icl_eval

    with pytest.raises(LeantuneError, match=r"--calibrate must be true or false, got 'no'"):
        icl_eval("gpt2", "sst2", calibrate="no")


# --- item 7: the library's arguments, checked where they enter, with the command line's rules -----------------
@pytest.fixture(scope="module")
def lm_tok():
    import torch
    import transformers as tf

    from leantune.models import gpt2_tokenizer_offline
    from tiny import TINY_CONFIGS

    cfg = TINY_CONFIGS["gpt2"]()
    cfg.vocab_size = 50257
    torch.manual_seed(0)
    return tf.GPT2LMHeadModel(cfg).eval(), gpt2_tokenizer_offline()


def _refused(call, *words):
    from leantune.errors import LeantuneError

    with pytest.raises(LeantuneError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_evaluate_icl_checks_its_arguments(lm_tok):
    from leantune import evaluate_icl

    lm, tok = lm_tok
    _refused(lambda: evaluate_icl("gpt2", tok, "sst2"), "evaluate_icl() argument model must be a loaded model",
             "'gpt2'")
    _refused(lambda: evaluate_icl(tok, lm, "sst2"), "argument model must be a transformers model", "swapped")
    _refused(lambda: evaluate_icl(lm, tok, "sst2", shots=-1), "evaluate_icl() argument shots must be an integer >= 0")
    _refused(lambda: evaluate_icl(lm, tok, "sst2", n_eval=0), "evaluate_icl() argument n_eval must be an integer >= 1")


def test_search_svd_and_apply_edit_check_their_arguments(lm_tok):
    import torch

    from leantune import apply_edit, search_svd

    lm, tok = lm_tok
    _refused(lambda: search_svd(torch.nn.Linear(2, 2), tok, "sst2"),
             "search_svd() argument model must be a transformers model", "Linear")
    _refused(lambda: search_svd(lm, tok, "sst2", shots=-1), "search_svd() argument shots must be an integer >= 0")
    _refused(lambda: search_svd(lm, tok, "sst2", rates=[0, 1.5]), "search_svd() argument rates", "outside [0, 1)")
    _refused(lambda: apply_edit(lm, 42), "apply_edit() argument edit must be", "int 42")


@pytest.mark.parametrize("kwargs, words", [({"lr": "1e-3"}, "create_optimizer() argument lr must be a finite "
                                                            "number > 0, got '1e-3'"),
                                           ({"lr": 1e-3, "v_ratio": float("nan")}, "argument v_ratio must be")])
def test_create_optimizer_checks_its_arguments(kwargs, words):
    from leantune import create_optimizer
    from tiny import tiny_model

    _refused(lambda: create_optimizer(tiny_model("llama"), **kwargs), words)


def test_qv_param_groups_refuses_a_nan_lr():
    from leantune import qv_param_groups
    from tiny import tiny_model

    model = tiny_model("llama")
    _refused(lambda: qv_param_groups(model, float("nan")), "qv_param_groups() argument lr must be a finite number")
    lrs = {g["name"]: g["lr"] for g in qv_param_groups(model, 1e-3)}
    assert lrs["q"] == 1e-3 and lrs["v"] == 4e-3
