"""Data-parallel training unchanged: 2 CPU processes under torchrun (gloo) finish and hold identical tensors."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from ft_helpers import model_dir, sentences, write_csv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_gives_identical_trained_tensors(tmp_path):
    mdir = model_dir(tmp_path, "gpt2")
    train = write_csv(tmp_path / "train.csv", sentences(40, seed=4))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(Path(__file__).parent / "ft_ddp_worker.py"),
           str(mdir), str(train), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(tmp_path / "trained_rank0.safetensors")), load_file(str(tmp_path / "trained_rank1.safetensors"))
    assert set(r0) == set(r1) and any("leantune_lora" in k for k in r0)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # the LoRA B matrices start at zero: non-zero means both ranks really took (the same) steps
    assert any(r0[k].abs().sum() > 0 for k in r0 if "lora_B" in k)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2 and metrics["train"]["steps"] == 3
