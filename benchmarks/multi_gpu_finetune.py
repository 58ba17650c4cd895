"""For a machine with GPUs: ``leantune finetune`` under accelerate's FSDP and DeepSpeed ZeRO-2 configs, QV-only
(LoRA) and fused-slice (full) training; after each run the adapter is merged and the K rows of every layer must
be bit-identical to the base model's, Q and V changed. Writes JSON. (No GPU in the session that wrote this:
it has not run yet. The CPU parts are covered by tests/test_fsdp_cpu.py: torch FSDP, 2 processes, gloo.)

    .venv/bin/python benchmarks/multi_gpu_finetune.py --gpus 2        # needs accelerate; deepspeed for ZeRO-2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import RESULTS, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

FSDP = """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
mixed_precision: bf16
num_machines: 1
num_processes: {n}
fsdp_config:
  fsdp_sharding_strategy: FULL_SHARD
  fsdp_auto_wrap_policy: NO_WRAP
  fsdp_use_orig_params: true
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_offload_params: false
  fsdp_sync_module_states: true
  fsdp_cpu_ram_efficient_loading: false
"""
ZERO2 = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
mixed_precision: bf16
num_machines: 1
num_processes: {n}
deepspeed_config:
  zero_stage: 2
  gradient_accumulation_steps: 1
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: false
"""


def build(root: Path, family: str) -> Path:
    """A small random seq-cls model (GPT-2 fused c_attn, or Llama) with the tiny word-level tokenizer."""
    import transformers as tf
    from ft_helpers import write_tokenizer

    cfg = {"gpt2": lambda: tf.GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=64, n_positions=128),
           "llama": lambda: tf.LlamaConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                           num_key_value_heads=2, intermediate_size=512, vocab_size=64)}[family]()
    cfg.num_labels, cfg.pad_token_id = 2, 0
    torch.manual_seed(0)
    d = root / family
    tf.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(d)
    write_tokenizer(d)
    return d


def k_rows_check(model_dir: Path, adapter: Path) -> dict:
    from leantune.arch import get_arch
    from leantune.finetune.artifacts import load_adapter
    from leantune.models import load_model

    base = get_arch(load_model(str(model_dir), head="seq-cls", num_labels=2, dtype="float32"))
    model, adapted, _ = load_adapter(adapter, str(model_dir))
    adapted.merge()
    arch = get_arch(model)
    out = {"k_bit_identical": True, "q_changed": True, "v_changed": True}
    for layer in range(arch.num_layers):
        for n in "qkv":
            same = torch.equal(arch.matrix(layer, n).read(), base.matrix(layer, n).read())
            if n == "k":
                out["k_bit_identical"] &= same
            else:
                out[f"{n}_changed"] &= not same
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, default=max(torch.cuda.device_count(), 1))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "multi_gpu_finetune.json"))
    args = ap.parse_args()
    from ft_helpers import sentences, write_csv

    report = {"machine": machine(), "gpus": args.gpus, "cuda": torch.cuda.is_available(),
              "device_names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], "runs": []}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    launcher = shutil.which("accelerate") or f"{sys.executable} -m accelerate.commands.launch"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = write_csv(root / "train.csv", sentences(256, seed=1))
        for backend, template in (("fsdp", FSDP), ("deepspeed-zero2", ZERO2)):
            cfg = root / f"{backend}.yaml"
            cfg.write_text(template.format(n=args.gpus))
            for family in ("gpt2", "llama"):
                model_dir = root / family if (root / family).exists() else build(root, family)
                for method in ("lora", "full"):
                    out = root / f"{backend}-{family}-{method}"
                    cmd = [*launcher.split(), "--config_file", str(cfg), "-m", "leantune", "finetune", "--model",
                           str(model_dir), "--train-file", str(train), "--text-columns", "text", "--targets", "qv",
                           "--method", method, "--rank", "4", "--lr", "1e-2", "--max-steps", str(args.steps),
                           "--batch-size", "8", "--max-length", "16", "--bf16", "--quiet", "--no-peft-export",
                           "--out", str(out)]
                    t0 = time.perf_counter()
                    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
                    run = {"backend": backend, "family": family, "method": method, "returncode": p.returncode,
                           "seconds": time.perf_counter() - t0}
                    if p.returncode == 0:
                        m = json.loads((out / "metrics.json").read_text())
                        run.update(world_size=m["train"]["world_size"], steps=m["train"]["steps"],
                                   eval=m["eval"], **k_rows_check(model_dir, out / "adapter"))
                    else:
                        run["error"] = (p.stdout + p.stderr)[-3000:]
                    report["runs"].append(run)
                    print({k: v for k, v in run.items() if k != "error"}, flush=True)
    report["all_k_rows_frozen"] = all(r.get("k_bit_identical") for r in report["runs"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
