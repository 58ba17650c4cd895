"""`leantune lab study`: the SVD paper's Figure 1 / Figure 2 experiments on the lab model.

For every layer's MLP and attention, validation accuracy against the clipping rate xi, at two shot
counts, over several seeds. A seed is one draw of demonstrations (and validation examples) for each
of ``instances`` held-out task instances; accuracy is pooled over the instances.

Each (shots, seed) is one grid search of the SVD engine (:class:`~leantune.svd.search.Search`, kept in
memory), so candidates get its layer reuse: layers below an edit are not recomputed.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from ..arch import get_arch
from ..runinfo import versions, write_json
from ..svd.edits import Edit
from ..svd.journal import MemoryJournal
from ..svd.lowrank import SVDCache
from ..svd.search import Search, candidate_key

RATES = (0.0, 0.1, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995)


def study(model_name: str = "lab-icl", shots=(1, 4), seeds=(0, 1, 2), instances: int = 8, rates=RATES,
          out: str = "docs/lab", progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from ..icl.evaluator import ICLEvaluator, PooledEvaluator
    from ..icl.splits import make_icl_data
    from ..models import load_model, load_tokenizer
    from ..tasks import get_task

    model = load_model(model_name, head="causal-lm")
    tok = load_tokenizer(model_name)
    arch = get_arch(model)
    cache = SVDCache(arch, torch.float64)
    modules = ("mlp", "attn")
    layers = list(range(arch.num_layers))
    results = []
    bar = tqdm(total=len(shots) * len(seeds), desc="lab study", unit="search", disable=not progress)
    for k in shots:
        for seed in seeds:
            evs = []
            for i in range(instances):
                task = get_task(f"lab:{i}")
                data = make_icl_data(task, k, None, None, seed=1000 * seed + i, test_split="validation")
                evs.append(ICLEvaluator(tok, task, data.demos, data.test, batch_size=64))
            # every (layer, module, rate), the unedited model for rate 0 (the grid strategy)
            search = Search(model, arch, PooledEvaluator(evs), cache, MemoryJournal(), list(modules),
                            progress=progress)
            search.run("grid", layers, list(rates))
            for layer in layers:
                for module in modules:
                    for rate in rates:
                        rec = search.state.results[candidate_key([Edit(layer, module, rate)])]
                        results.append({"shots_per_class": k, "seed": seed, "layer": layer, "module": module,
                                        "rate": rate, "val_accuracy": rec["val_accuracy"]})
            bar.update(1)
    bar.close()
    summary = _summarize(results, shots, arch.num_layers, modules, rates)
    out_dir = Path(out)
    plots = plot_study(summary, shots, arch.num_layers, modules, rates, out_dir)
    report = {"model": model_name, "shots_per_class": list(shots), "seeds": list(seeds), "instances": instances,
              "rates": list(rates), "svd_dtype": "float64", "results": results, "mean": summary,
              "plots": [str(p) for p in plots], "versions": versions()}
    write_json(out_dir / "lab_study.json", report)
    return report


def _summarize(results, shots, num_layers, modules, rates) -> list[dict]:
    rows = []
    for k in shots:
        for layer in range(num_layers):
            for module in modules:
                for rate in rates:
                    accs = [r["val_accuracy"] for r in results if r["shots_per_class"] == k and r["layer"] == layer
                            and r["module"] == module and r["rate"] == rate]
                    rows.append({"shots_per_class": k, "layer": layer, "module": module, "rate": rate,
                                 "mean": statistics.mean(accs), "std": statistics.pstdev(accs), "n_seeds": len(accs)})
    return rows


def plot_study(summary, shots, num_layers, modules, rates, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(shots), len(modules), figsize=(5 * len(modules), 3.4 * len(shots)),
                             squeeze=False, sharey=True)
    xs = list(range(len(rates)))
    for i, k in enumerate(shots):
        for j, module in enumerate(modules):
            ax = axes[i][j]
            for layer in range(num_layers):
                pts = [r for r in summary if r["shots_per_class"] == k and r["module"] == module and r["layer"] == layer]
                pts.sort(key=lambda r: r["rate"])
                ax.errorbar(xs, [p["mean"] for p in pts], yerr=[p["std"] for p in pts], marker="o", capsize=2,
                            label=f"layer {layer}")
            ax.set_xticks(xs, [f"{r:g}" for r in rates])
            ax.set_title(f"{module}, {k} shot(s) per class")
            ax.set_xlabel("clipping rate xi")
            ax.set_ylabel("validation accuracy")
            ax.axhline(0.5, color="gray", lw=0.8, ls=":")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("lab model: accuracy vs SVD clipping rate, per layer (mean ± std over seeds)")
    fig.tight_layout()
    from ..report import save_figure

    return [save_figure(fig, out_dir / "lab_study.png", dpi=110)]
