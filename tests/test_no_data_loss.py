"""No command deletes what it did not create: the demo's output folder and the packaged lab checkpoint."""

from pathlib import Path

import pytest

from leantune.cli import main
from leantune.recipes.demo import MARKER, prepare_out_dir
from leantune.errors import LeantuneError


def test_demo_refuses_a_users_nonempty_folder(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("years of work")
    assert main(["demo", "--out", str(tmp_path), "--quick", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("leantune: error:") == 1 and "not a previous demo output" in err
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]  # nothing written either


def test_demo_refuses_an_existing_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    assert main(["demo", "--out", str(f), "--quick", "--quiet"]) == 2
    assert "existing file" in capsys.readouterr().err and f.read_text() == "keep me"


def test_rerun_clears_only_what_the_demo_wrote(tmp_path):
    out = tmp_path / "demo"
    prepare_out_dir(out)
    (out / "finetune" / "qv").mkdir(parents=True)
    (out / "report.md").write_text("old report")
    (out / "my_notes.md").write_text("a user's file placed next to the demo output")
    prepare_out_dir(out)
    assert not (out / "finetune").exists() and not (out / "report.md").exists()
    assert (out / "my_notes.md").read_text().startswith("a user's file") and (out / MARKER).is_file()


def test_empty_folder_is_used(tmp_path):
    prepare_out_dir(tmp_path)
    assert (tmp_path / MARKER).is_file()


def test_lab_train_never_writes_into_the_package(tmp_path):
    import leantune
    from leantune.lab.train import LabTrainConfig, train

    inside = Path(leantune.__file__).parent / "lab" / "checkpoint"
    before = {p.name: p.stat().st_mtime_ns for p in inside.iterdir()}
    with pytest.raises(LeantuneError, match="inside the installed leantune package"):
        train(LabTrainConfig(steps=1), inside, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in inside.iterdir()} == before


def test_lab_train_default_out_is_under_the_current_directory():
    from leantune.cli import build_parser

    args = build_parser().parse_args(["lab", "train"])
    assert args.out == "runs/lab"
