"""The family registry is honest: README shows exactly it, every named family has a tiny parity model,
refused families fail with one line that names them, and ``leantune.arch`` imports nothing above it."""

import ast
import importlib.util
from pathlib import Path

import pytest
import transformers
from packaging.version import Version
from torch import nn
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from leantune.arch import FAMILIES, REFUSED, get_arch
from leantune.errors import LeantuneError
from tiny import TINY_CONFIGS, tiny_model_type

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("families_table", ROOT / "scripts" / "families_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_the_generated_one():
    script = _script()
    assert script.readme_block((ROOT / "README.md").read_text()) == script.markdown(), \
        "README.md's families table is stale: run `python scripts/families_table.py --write`"


def test_every_named_family_has_a_tiny_parity_model():
    tested = {tiny_model_type(name) for name in TINY_CONFIGS}
    assert tested == set(FAMILIES), \
        f"named but untested: {set(FAMILIES) - tested}; tested but unnamed: {tested - set(FAMILIES)}"


def test_no_family_is_both_named_and_refused():
    assert not set(FAMILIES) & set(REFUSED)


TABLE_TRANSFORMERS = Version("5.24")  # the version whose model types the tables were checked against


@pytest.mark.skipif(Version(transformers.__version__).release < TABLE_TRANSFORMERS.release,
                    reason=f"the families table names model types of transformers >= {TABLE_TRANSFORMERS}")
def test_named_and_refused_are_model_types_of_transformers():
    unknown = (set(FAMILIES) | set(REFUSED)) - set(CONFIG_MAPPING)
    assert not unknown, f"not model types of this transformers: {unknown}"


class _Stub(nn.Module):
    def __init__(self, model_type):
        super().__init__()
        self.config = type("Config", (), {"model_type": model_type})()


@pytest.mark.parametrize("model_type", sorted(REFUSED))
def test_refused_family_gets_one_line_naming_it_and_why(model_type):
    with pytest.raises(LeantuneError) as info:
        get_arch(_Stub(model_type))
    message = str(info.value)
    assert "\n" not in message and f"'{model_type}'" in message and REFUSED[model_type] in message


ABOVE_ARCH = ("tasks", "models", "icl", "svd", "finetune", "lab", "cli", "recipes", "report")


def test_arch_imports_nothing_above_it():
    for path in (ROOT / "leantune" / "arch").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:  # from ..x import y / from .. import x
                tops = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                assert not set(tops) & set(ABOVE_ARCH), f"{path.name} imports leantune.{node.module or tops}"
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = getattr(node, "module", None) or ""
            for name in [module, *names]:
                parts = name.split(".")
                assert not (parts[0] == "leantune" and len(parts) > 1 and parts[1] in ABOVE_ARCH), \
                    f"{path.name} imports {name}"
