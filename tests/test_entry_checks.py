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
