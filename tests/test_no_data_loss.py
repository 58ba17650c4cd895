"""No command deletes what it did not create: the demo's output folder and the packaged lab checkpoint."""

from pathlib import Path

import pytest

from leantune.cli import main
from leantune.recipes.demo import prepare_out_dir
from leantune.errors import LeantuneError
from leantune.outputs import MANIFEST, claim


def test_demo_refuses_a_users_nonempty_folder(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("years of work")
    assert main(["demo", "--out", str(tmp_path), "--quick", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("leantune: error:") == 1 and "holds files leantune did not write (thesis.tex)" in err
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]  # nothing written either


def test_demo_refuses_an_existing_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    assert main(["demo", "--out", str(f), "--quick", "--quiet"]) == 2
    assert "existing file" in capsys.readouterr().err and f.read_text() == "keep me"


def _old_demo(out: Path) -> None:
    """A previous demo output: its files, listed by its manifest."""
    prepare_out_dir(out)
    (out / "finetune" / "qv").mkdir(parents=True)
    (out / "finetune" / "qv" / "metrics.json").write_text("{}")
    claim(out / "finetune" / "qv", "finetune", ["metrics.json"])  # the finetune run's own manifest
    (out / "report.md").write_text("old report")
    claim(out, "demo", ["finetune/qv/metrics.json", "report.md"])


def test_rerun_clears_only_what_the_demo_wrote(tmp_path):
    out = tmp_path / "demo"
    _old_demo(out)
    prepare_out_dir(out)
    assert not (out / "finetune").exists() and not (out / "report.md").exists()
    assert (out / MANIFEST).is_file()


@pytest.mark.parametrize("where", ["my_notes.md", "finetune/my_notes.md", "finetune/qv/my_notes.md"])
def test_a_users_file_in_a_demo_folder_is_refused_and_kept_with_overwrite(tmp_path, where, capsys):
    out = tmp_path / "demo"
    _old_demo(out)
    (out / where).write_text("a user's file placed inside the demo output")
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("leantune: error:") == 1 and f"holds files leantune did not write ({where})" in err
    assert (out / "report.md").read_text() == "old report"  # refused: nothing removed
    prepare_out_dir(out, overwrite=True)  # allowed explicitly: the demo's files go, the user's stays
    assert (out / where).read_text().startswith("a user's file")
    assert not (out / "report.md").exists() and not (out / "finetune" / "qv" / "metrics.json").exists()


def test_empty_folder_is_used(tmp_path):
    prepare_out_dir(tmp_path)
    assert (tmp_path / MANIFEST).is_file()


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
