"""benchmarks/gpu_check.py works before a GPU ever sees it: the CPU/CI mode (--device cpu --tiny) runs every
section and writes a JSON whose checks hold."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert out.is_file(), proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["errors"] == [] and proc.returncode == 0, r["errors"]
    assert r["device_name"] == "cpu" and set(r["models"]) == {"tiny-llama", "tiny-gpt2", "tiny-gpt_neox"}
    for name, m in r["models"].items():
        for dtype in ("bfloat16", "float16"):
            ev = m["eval"][dtype]
            assert ev["max_abs_logprob_diff"] < 0.05 and ev["prediction_agreement"] == 1.0, (name, dtype)
    assert r["models"]["tiny-gpt2"]["bfloat16"]["search_with_1KB_reuse_memory_identical"] is True
    for dtype in ("bfloat16", "float16"):
        g = r["models"]["tiny-gpt2"][dtype]
        assert "error" not in g["search"] and 0 <= g["search"]["validation"]["after"] <= 1
        assert g["apply"]["dense_dtype"] == g["apply"]["factorized_dtype"] == f"torch.{dtype}"
        assert g["apply"]["max_abs_logit_diff_factorized_vs_dense"] < 0.05
        assert g["lora"]["losses_finite"] and g["lora"]["k_rows_bit_identical_after_merge"]
    sp = r["speed"]
    assert sp["eval_vs_lm_eval"]["leantune_accuracy"] == sp["eval_vs_lm_eval"]["lm_eval_accuracy"]
    assert sp["search_vs_seed_loop"]["seed_loop_extrapolated_s"] > 0
    assert sp["lora_qv_step_vs_peft"]["peft_target_modules"] == ["c_attn"]
