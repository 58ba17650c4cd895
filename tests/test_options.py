"""One definition of every option: each command's flags, defaults and --config keys come from its dataclass."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields

import pytest

from leantune.cli import build_parser, main
from leantune.errors import LeantuneError
from leantune.options import add_flags, cli_fields, config_from_args, option, recorded
from leantune.recipes import all_commands

RUNTIME = {"help", "config", "quiet", "recipe", "parser"}  # flags every command has, not config fields


def _subparser(words):
    p = build_parser()
    for w in words:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[w]
    return p


@pytest.mark.parametrize("words", list(all_commands()), ids=" ".join)
def test_flags_are_exactly_the_config_fields_with_their_defaults(words):
    recipe = all_commands()[words]
    parser = _subparser(words)
    dests = {a.dest for a in parser._actions} - RUNTIME
    names = {f.name for f in cli_fields(recipe.config)} - {"quiet"}
    assert dests == names
    defaults = recipe.config() if not any(f.metadata.get("required") for f in fields(recipe.config)) else None
    args = parser.parse_args([])
    for f in cli_fields(recipe.config):
        if defaults is not None:
            assert getattr(args, f.name) == getattr(defaults, f.name), f.name


@dataclass
class Toy:
    name: str | None = option(None, "who", required=True)
    count: int = option(3, "how many")
    rates: str | list = option("0,0.5", "a list")
    export: bool = option(True, "skip the export", off_flag="--no-export")
    verbose: bool = option(False)
    secret: str = option("x", cli=False)
    dry: bool = option(False, recorded=False)


def test_a_new_dataclass_field_is_a_flag_with_its_type_default_and_negation():
    p = argparse.ArgumentParser()
    add_flags(p, Toy)
    cfg = config_from_args(Toy, p.parse_args(["--name", "a", "--count", "5", "--no-export", "--verbose"]))
    assert cfg == Toy(name="a", count=5, rates="0,0.5", export=False, verbose=True)
    assert "--secret" not in p.format_help()
    assert "dry" not in recorded(cfg) and "count" in recorded(cfg)
    with pytest.raises(SystemExit):
        p.parse_args(["--name", "a", "--count", "many"])  # argparse's type check (the CLI turns it into one line)
    with pytest.raises(LeantuneError, match=r"missing --name \(give it on the command line or in --config\)"):
        config_from_args(Toy, p.parse_args([]))


def test_a_config_file_key_reaches_the_recipe_and_the_command_line_wins(tmp_path, monkeypatch):
    seen = {}
    recipe = all_commands()[("icl", "search")]

    def fake_run(cfg, progress):
        seen["cfg"], seen["progress"] = cfg, progress
        return {}  # a non-zero rank's empty result: prints nothing

    from dataclasses import replace

    from leantune.recipes import icl_search

    monkeypatch.setitem(icl_search.COMMANDS, ("icl", "search"), replace(recipe, run=fake_run))
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"model": "m", "task": "sst2", "top-k": 5, "n_val": 7, "wait_lock": True,
                                "quiet": True}))
    assert main(["icl", "search", "--config", str(conf), "--n-val", "9", "--out", str(tmp_path / "o")]) == 0
    cfg = seen["cfg"]
    assert (cfg.model, cfg.task, cfg.top_k, cfg.n_val, cfg.wait_lock) == ("m", "sst2", 5, 9, True)
    assert seen["progress"] is False



@pytest.mark.parametrize("argv", [["demo", "--device", "cuda:7"], ["lab", "train", "--device", "cuda:7"]],
                         ids=["demo", "lab-train"])
def test_demo_and_lab_take_a_device_checked_before_any_work(argv, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leantune: error: --device cuda:7") and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_quiet_also_silences_the_loading_bars_of_transformers(capsys):
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as hf_logging

    try:
        assert main(["icl", "eval", "--model", "lab-icl", "--task", "lab:1", "--shots", "1", "--n-eval", "4",
                     "--quiet"]) == 0
        captured = capsys.readouterr()
        assert "accuracy" in captured.out and "Loading weights" not in captured.err and captured.err == ""
    finally:
        hf_logging.enable_progress_bar()  # process-wide state: leave it as other tests expect it
        enable_progress_bars()


def test_command_specific_rules_and_output_checks_hold_under_config(tmp_path, capsys):
    """--config re-parses with the subcommand's parser; the command words (and so its own rules) survive."""
    conf = tmp_path / "c.yaml"
    conf.write_text("seeds: 1\n")
    from leantune.validate import command_of
    from leantune.config import apply_config

    parser = _subparser(("lab", "study"))
    args = build_parser().parse_args(["lab", "study", "--config", str(conf)])
    merged = apply_config(parser, args, ["--config", str(conf)])
    assert command_of(merged) == "lab study" and merged.seeds == 1 and merged.shots == "1,4"
    a_file = tmp_path / "f.txt"
    a_file.write_text("keep")
    conf.write_text(f"model: m\ntask: sst2\nout: {a_file}\n")
    assert main(["icl", "eval", "--config", str(conf)]) == 2
    assert "is an existing file" in capsys.readouterr().err and a_file.read_text() == "keep"


@pytest.mark.parametrize("argv, message", [
    (["demo", "--dtype", "bf32"], "--dtype: unknown dtype 'bf32'; choose one of auto, float32"),
    (["icl", "search", "--model", "m", "--task", "sst2", "--svd-cache-memory", "lots"],
     "--svd-cache-memory 'lots' is not a size"),
    (["icl", "search", "--model", "m", "--task", "sst2", "--reuse-memory", "2XB"], "--reuse-memory '2XB' is not a size"),
    (["inspect"], "missing MODEL"),
])
def test_bad_values_of_new_options_stop_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(argv + (["--out", str(out)] if argv[0] != "inspect" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_library_calls_check_required_fields_too():
    from leantune.recipes.icl_search import icl_search

    with pytest.raises(LeantuneError, match="missing --model"):
        icl_search(task="sst2")
