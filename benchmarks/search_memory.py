"""Peak RSS of an SVD search with ``--layers all``, without and with a ``--reuse-memory`` budget.

Each search runs in its own process (``python -m leantune icl search ...``); its peak resident set size
comes from ``wait4``'s rusage, so nothing else of this script is counted. The dry-run estimate of each
configuration is recorded beside the measurement, and the two searches' summaries must agree (the budget
changes memory and time, never results).

    .venv/bin/python benchmarks/search_memory.py                          # smollm2-135m, 100MB budget
    .venv/bin/python benchmarks/search_memory.py --model DIR --budget 1MB --n-val 16 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]


def run_search(argv: list[str], log: Path) -> tuple[float, float, int, str]:
    """(peak RSS MB, seconds, return code, output tail) of one ``leantune icl search`` process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "leantune", "icl", "search", *argv], cwd=ROOT, env=env,
                                stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (Linux: ru_maxrss in KiB)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, proc.returncode, log.read_text()[-2000:]


def one(args, budget: str | None) -> dict:
    with tempfile.TemporaryDirectory() as d:
        common = ["--model", args.model, "--task", args.task, "--strategy", "grid", "--layers", "all", "--modules",
                  args.modules, "--rates", args.rates, "--shots", str(args.shots), "--n-val", str(args.n_val),
                  "--n-test", str(args.n_test), "--dtype", args.dtype, "--quiet"]
        if args.tokenizer:
            common += ["--tokenizer", args.tokenizer]
        if budget:
            common += ["--reuse-memory", budget, "--reuse-overflow", "recompute"]
        dry = subprocess.run([sys.executable, "-m", "leantune", "icl", "search", *common, "--dry-run", "--out",
                              f"{d}/dry"], cwd=ROOT, capture_output=True, text=True)
        peak, seconds, rc, tail = run_search(common + ["--out", f"{d}/run"], Path(d) / "log.txt")
        summary = json.loads(Path(f"{d}/run/summary.json").read_text()) if rc == 0 else None
    res = {"budget": budget, "peak_rss_mb": peak, "seconds": seconds, "returncode": rc,
           "dry_run": [x for x in dry.stdout.splitlines() if x.startswith("expected peak memory")]}
    if summary:
        res["summary"] = {k: summary[k] for k in ("chosen_edits", "validation", "test")}
        res["reuse"] = summary["memory"]["reuse"]
        res["candidates"] = summary["candidates"]
    else:
        res["error"] = tail
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokenizer", help="(default: the model's)")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--budget", default="100MB", help="--reuse-memory of the bounded run")
    ap.add_argument("--modules", default="mlp")
    ap.add_argument("--rates", default="0,0.9")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=50)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=str(RESULTS / "search_memory.json"))
    args = ap.parse_args()
    runs = {}
    for which, budget in (("unbounded", None), ("bounded", args.budget)):
        runs[which] = one(args, budget)
        print(which, {k: v for k, v in runs[which].items() if k in ("peak_rss_mb", "seconds", "budget")}, flush=True)
    a, b = runs["unbounded"], runs["bounded"]
    report = {"machine": machine(), "args": vars(args), **runs,
              "same_results": a.get("summary") == b.get("summary") and a.get("summary") is not None,
              "peak_rss_saved_mb": a["peak_rss_mb"] - b["peak_rss_mb"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"same results: {report['same_results']}; peak RSS {a['peak_rss_mb']:.0f} MB -> {b['peak_rss_mb']:.0f} MB; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
