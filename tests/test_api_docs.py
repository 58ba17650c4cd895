"""docs/api.md's examples run: each ```python block is executed on its own, in a temporary folder."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def _title(code: str) -> str:
    heading = None
    text = DOC.read_text(encoding="utf-8")
    for line in text[:text.index(code)].splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
    return re.sub(r"\W+", "-", heading or "block").strip("-").lower()[:40]


def test_the_page_has_the_examples_the_issue_asks_for():
    code = "\n".join(BLOCKS)
    assert len(BLOCKS) >= 6
    for needle in ("tf.Trainer(", "get_peft_model(", "attach_adapters(", "search_svd(", "apply_edit(",
                   "@register_strategy", "@register_method", "save_adapters(", "load_adapters(",
                   "QVLearningRateCallback", "bridge.evaluate("):
        assert needle in code, needle


@pytest.mark.parametrize("code", BLOCKS, ids=[f"{i}-{_title(b)}" for i, b in enumerate(BLOCKS)])
def test_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{DOC.name} block", "exec"), {"__name__": "docs_api_example"})
