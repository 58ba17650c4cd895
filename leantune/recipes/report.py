"""Recipe of ``leantune report DIR``: rebuild ``report.html`` of a finished search from its files (no model)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from .common import Recipe


@dataclass
class ReportConfig:
    dir: str | None = option(None, "a finished `leantune icl search` folder (holds summary.json)", positional=True,
                             required=True, metavar="DIR")


def report_html(run_dir: str) -> str:
    """Write ``run_dir/report.html`` (one self-contained page) and return its path."""
    from pathlib import Path

    from ..outputs import claim, read_manifest
    from ..search_report import build_report

    path = build_report(run_dir)
    manifest = read_manifest(Path(run_dir))
    if manifest is not None and manifest.get("command") == "icl search":  # the page is the search's own file
        claim(Path(run_dir), "icl search", ["report.html"])
    return str(path)


CONFIG = ReportConfig


def run(cfg: ReportConfig, progress: bool) -> str:
    return report_html(cfg.dir)


def report(path: str, cfg: ReportConfig) -> str:
    return f"report: {path}"


COMMANDS = {("report",): Recipe(ReportConfig, run, report,
                                help="rebuild report.html of a search folder from its files (no model needed)")}
