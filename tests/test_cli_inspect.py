"""`leantune inspect` on real MiniLM weights, and its one-line errors."""

import json
import subprocess
import sys

import torch
import transformers as tf

from leantune.cli import main


def test_inspect_minilm_spectrum_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    assert main(["inspect", "minilm", "--spectrum", "--json", str(out), "--plot", str(png), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert data["family"] == "bert" and data["num_layers"] == 6
    spec = data["spectrum"]
    for layer in range(6):
        got = {r["matrix"]: r for r in spec if r["layer"] == layer}
        assert set(got) == {"q", "k", "v", "o", "mlp_in", "mlp_out"}
        assert got["mlp_in"]["shape"] == [1536, 384] and got["q"]["shape"] == [384, 384]
        for r in got.values():
            assert r["condition_number"] == r["sigma_max"] / r["sigma_min"] > 1
            assert 1 <= r["effective_rank"] <= r["full_rank"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "family: bert" in printed and "encoder.layer.0.attention.self.query" in printed


def test_spectrum_matches_numpy():
    from leantune.svd.spectrum import spectrum_stats

    w = torch.randn(20, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    stats = spectrum_stats(w, torch.float64)
    assert abs(stats["condition_number"] - float(s[0] / s[-1])) < 1e-9
    assert stats["full_rank"] == 12
    # a rank-1 matrix has effective rank 1 and an infinite condition number
    r1 = torch.outer(torch.arange(1.0, 5.0), torch.ones(3))
    st = spectrum_stats(r1, torch.float64)
    assert abs(st["effective_rank"] - 1) < 1e-6


def _run(*args):
    return subprocess.run([sys.executable, "-m", "leantune", *args], capture_output=True, text=True, timeout=120)


def test_bad_path_is_one_line_exit_2(tmp_path):
    r = _run("inspect", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr


def test_corrupt_config_and_undiscoverable_family(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    assert main(["inspect", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err

    # Mamba has no q/k/v projections: it is refused by name, with the reason, in one line.
    cfg = tf.MambaConfig(hidden_size=32, num_hidden_layers=2, vocab_size=64, state_size=4)
    tf.MambaModel(cfg).save_pretrained(tmp_path / "mamba")
    assert main(["inspect", str(tmp_path / "mamba")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("leantune")]
    assert len(lines) == 1 and "'mamba'" in lines[0] and "state-space" in lines[0] and "Traceback" not in err
