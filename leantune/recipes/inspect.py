"""Recipe of ``leantune inspect``: what the architecture map sees in a model, optionally with its spectrum."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..options import option
from .common import Recipe, device_map_option, device_option, dtype_option, max_memory_option


@dataclass
class InspectConfig:
    model: str | None = option(None, "hub id, local directory or alias (e.g. minilm)", positional=True,
                               required=True)
    spectrum: bool = option(False, "per (layer, matrix): sigma max/min, condition number, effective rank")
    json: str | None = option(None, "write the map (and spectrum) as JSON", metavar="PATH")
    plot: str | None = option(None, "write a PNG of condition number by layer, attention vs MLP", metavar="PATH")
    svd_dtype: str = option("float32", "dtype the spectra's SVD runs in", choices=("float32", "float64"))
    dtype: str = dtype_option()
    device: str | None = device_option()
    device_map: str | None = device_map_option()
    max_memory: str | None = max_memory_option()
    trust_remote_code: bool = option(False, "allow the model repo's own Python code")


def inspect(model_name: str, spectrum: bool = False, json_path: str | None = None, plot_path: str | None = None,
            svd_dtype: str = "float32", trust_remote_code: bool = False, progress: bool = True,
            dtype: str = "auto", device: str | None = None, device_map=None, max_memory=None) -> dict:
    import torch

    from ..arch import get_arch
    from ..models import load_model
    from ..report import plot_condition_numbers
    from ..svd.spectrum import model_spectrum

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
    from ..report import format_table

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


CONFIG = InspectConfig


def run(cfg: InspectConfig, progress: bool) -> dict:
    return inspect(cfg.model, spectrum=cfg.spectrum, json_path=cfg.json, plot_path=cfg.plot, svd_dtype=cfg.svd_dtype,
                   trust_remote_code=cfg.trust_remote_code, progress=progress, dtype=cfg.dtype, device=cfg.device,
                   device_map=cfg.device_map, max_memory=cfg.max_memory)


def report(result: dict, cfg: InspectConfig) -> str:
    return render(result) + (f"\njson: {cfg.json}" if cfg.json else "")


COMMANDS = {("inspect",): Recipe(
    InspectConfig, run, report, help="show where W_q/W_k/W_v/W_o and the MLP matrices live; optional spectrum",
    description="Print the architecture map of MODEL (hub id, local directory or alias 'minilm'); with --spectrum "
                "also singular-value statistics per matrix.")}
