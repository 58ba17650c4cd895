"""`leantune inspect`: what the architecture map sees in a model, optionally with its spectrum."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .arch import get_arch
from .models import load_model
from .report import format_table, plot_condition_numbers
from .svd.spectrum import model_spectrum


def inspect(model_name: str, spectrum: bool = False, json_path: str | None = None, plot_path: str | None = None,
            svd_dtype: str = "float32", trust_remote_code: bool = False, progress: bool = True,
            dtype: str = "auto", device: str | None = None, device_map=None, max_memory=None) -> dict:
    model = load_model(model_name, head="base", trust_remote_code=trust_remote_code, dtype=dtype, device=device,
                       device_map=device_map, max_memory=max_memory)
    arch = get_arch(model)
    result = {"model": model_name, **arch.summary()}
    if spectrum or plot_path:
        rows = model_spectrum(arch, dtype=getattr(torch, svd_dtype), progress=progress)
        result["spectrum"] = rows
        result["svd_dtype"] = svd_dtype
        if plot_path:
            plot_condition_numbers(rows, plot_path, title=f"{model_name}: condition number by layer")
            result["plot"] = str(plot_path)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2, allow_nan=False))
    return result


def render(result: dict) -> str:
    lines = [f"model: {result['model']}", f"family: {result['family']} (model_type {result['model_type']})",
             f"layers: {result['num_layers']}", f"matrices per layer: {', '.join(result['matrices'])}", ""]
    layer0 = result["layers"][0]
    lines.append("per layer (all layers share this layout; paths shown for layer 0):")
    lines.append(format_table(["matrix", "shape [out x in]", "fused", "bias", "module"],
                              [[m["matrix"], f"{m['shape'][0]}x{m['shape'][1]}",
                                "yes (" + "+".join([m["matrix"], *m["fused_with"]]) + ")" if m["fused"] else "no",
                                m["has_bias"], m["module"]] for m in layer0]))
    if "spectrum" in result:
        lines += ["", f"spectrum (SVD in {result['svd_dtype']}):"]
        lines.append(format_table(["layer", "matrix", "sigma_max", "sigma_min", "cond", "eff_rank", "full_rank"],
                                  [[r["layer"], r["matrix"], r["sigma_max"], r["sigma_min"], r["condition_number"],
                                    r["effective_rank"], r["full_rank"]] for r in result["spectrum"]]))
    if "plot" in result:
        lines.append(f"\nplot: {result['plot']}")
    return "\n".join(lines)
