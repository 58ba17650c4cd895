"""QV-only and fused-slice training under FSDP (full shard, use_orig_params) on 2 CPU processes: K rows stay
bit-identical, Q and V train, and both ranks end with the same weights. (accelerate's FSDP and DeepSpeed
ZeRO-2 launchers need GPUs: benchmarks/multi_gpu_finetune.py runs the CLI under them.)"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = [("gpt2", "full"), ("gpt_neox", "lora")]  # fused slices: GPT-2 [Q|K|V] full rows, NeoX interleaved LoRA


def test_fsdp_keeps_k_rows_frozen(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(Path(__file__).parent / "fsdp_worker.py"), str(tmp_path),
           *(f"{f}:{m}" for f, m in CASES)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for family, method in CASES:
        r0, r1 = (load_file(str(tmp_path / f"{family}-{method}-rank{i}.safetensors")) for i in (0, 1))
        for key in (k for k in r0 if k.startswith("after.")):
            assert torch.equal(r0[key], r1[key]), f"{family}/{method} {key}: ranks differ"
            old = r0["before." + key.removeprefix("after.")]
            if key.endswith(".k"):
                assert torch.equal(r0[key], old), f"{family}/{method}: K rows of layer {key} changed under FSDP"
            else:
                assert not torch.equal(r0[key], old), f"{family}/{method}: {key} did not train"
