"""`leantune ... --help` states every option's default and what it does, generated from the config dataclasses."""

import pytest

from leantune.cli import build_parser, main
from leantune.finetune.trainer import default_eval_every
from leantune.options import cli_fields, help_with_default
from leantune.recipes import all_commands


def _help(capsys, *words):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*words, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines; compare as one line


def test_icl_search_help_shows_the_defaults(capsys):
    text = _help(capsys, "icl", "search")
    for expected in ("--modules MODULES", "(default: mlp,attn)", "(default: all)",
                     "(default: 0,0.1,0.5,0.75,0.9,0.95,0.99,0.995)", "(default: 200)", "(default: 500)",
                     "(default: 3)", "examples per forward pass", "(default: 16)"):
        assert expected in text, expected


def test_every_flag_of_every_command_has_help():
    for words, recipe in all_commands().items():
        for f in cli_fields(recipe.config):
            assert f.metadata.get("help"), f"leantune {' '.join(words)} --{f.name.replace('_', '-')} has no help text"


def test_help_with_default_rules():
    assert help_with_default("rank", 8) == "rank (default: 8)"
    assert help_with_default("seed", 0) == "seed (default: 0)"  # 0 is a default to show, not "none"
    assert help_with_default("lr (default 1e-4)", 1e-4) == "lr (default 1e-4)"  # stated already
    assert help_with_default("out", None) == "out" and help_with_default("calibrate", False) == "calibrate"
    assert help_with_default("export", True, off_flag="--no-peft-export") == "export (on unless --no-peft-export is given)"


def test_offline_error_names_the_missing_model_not_the_tokenizer(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["icl", "eval", "--model", "someone/not-downloaded", "--task", "sst2", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "model someone/not-downloaded is not available offline" in err and "--tokenizer" not in err


def test_default_eval_schedule_keeps_evaluation_near_a_fifth_of_a_run():
    # SST-2's 872 dev examples, batch 32: a 20-step run evaluates once, at its end; a 200-step run 5 times
    assert default_eval_every(20, 32, 872) == 20
    assert default_eval_every(100, 32, 872) == 50
    assert default_eval_every(200, 32, 872) == 40
    assert default_eval_every(10_000, 32, 872) == 2000  # never more than 5
    assert default_eval_every(3, 8, 4) == 1  # a tiny eval set: 4 evaluations fit the budget, 3 steps allow 3
