"""``report.html`` of an SVD search: one self-contained page (images inline) built only from the run folder.

It reads what the search wrote (``summary.json``, ``candidates.jsonl``, ``test_predictions.jsonl``,
``heatmap.png``) and never a model, so ``leantune report DIR`` rebuilds it for any finished run, old ones
included (a summary written before the statistics existed gets the sections it has data for).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .errors import LeantuneError

MAX_EXAMPLES = 25  # gained / lost examples shown per list


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill: the journal reader skips it too
    return rows


def _e(x) -> str:
    return html.escape(str(x))


def _edits(edits) -> str:
    return ", ".join(f"layer {e['layer']} {e['module']} &xi;={e['rate']:g}" for e in edits) or "none"


def _pct(x) -> str:
    return f"{100 * x:+.1f}"


def _p(p: float) -> str:
    return "&lt; 0.0001" if p < 1e-4 else f"{p:.2g}"


def _stat_row(name: str, st: dict) -> str:
    b, a, c = st["before"], st["after"], st["change"]
    lo, hi = c["accuracy_change_ci95"]
    return (f"<tr><td>{_e(name)}</td><td>{c['n']}</td><td>{b['accuracy']:.3f}</td><td>{a['accuracy']:.3f}</td>"
            f"<td>{_pct(c['accuracy_change'])}</td><td>[{_pct(lo)}, {_pct(hi)}]</td><td>{c['gained']} / {c['lost']}</td>"
            f"<td>{_p(c['mcnemar_p'])}</td><td>{b['balanced_accuracy']:.3f} &rarr; {a['balanced_accuracy']:.3f}</td>"
            f"<td>{b['majority_rate']:.3f}</td><td>{_e(b['top_prediction'])} {b['top_prediction_share']:.0%} &rarr; "
            f"{_e(a['top_prediction'])} {a['top_prediction_share']:.0%}</td></tr>")


def _confusion(title: str, st: dict) -> str:
    m, names = st["confusion"], st["labels"]
    peak = max([max(r) for r in m] + [1])
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = []
    for i, row in enumerate(m):
        cells = "".join(f'<td style="background:rgba(40,90,200,{0.08 + 0.7 * v / peak:.2f})"'
                        f'{" class=diag" if i == j else ""}>{v}</td>' for j, v in enumerate(row))
        recall = st["per_class_recall"].get(names[i])
        rows.append(f"<tr><th>{_e(names[i])}</th>{cells}<td>{'-' if recall is None else f'{recall:.2f}'}</td></tr>")
    return (f'<div class="cm"><h4>{_e(title)}</h4><table><tr><th>gold \\ predicted</th>{head}<th>recall</th></tr>'
            f"{''.join(rows)}</table><p>accuracy {st['accuracy']:.3f}, balanced {st['balanced_accuracy']:.3f}, "
            f"macro-F1 {st['macro_f1']:.3f}</p></div>")


def _examples(rows: list[dict], names: list[str], gained: bool) -> str:
    pick = [r for r in rows if r.get("correct") != r.get("correct_before")
            and bool(r.get("correct")) == gained]
    if not pick:
        return "<p>none</p>"

    def name(i):
        return _e(names[i]) if isinstance(i, int) and 0 <= i < len(names) else _e(i)

    body = "".join(f"<tr><td>{_e(r['idx'])}</td><td>{name(r['label'])}</td><td>{name(r['pred_before'])}</td>"
                   f"<td>{name(r['pred'])}</td><td class=text>{_e(r.get('text', ''))}</td></tr>"
                   for r in pick[:MAX_EXAMPLES])
    more = f"<p>... and {len(pick) - MAX_EXAMPLES} more in test_predictions.jsonl</p>" if len(pick) > MAX_EXAMPLES else ""
    return (f"<table><tr><th>idx</th><th>gold</th><th>before</th><th>after</th><th>query</th></tr>{body}</table>"
            f"{more}")


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;font-size:14px}
th{background:#f3f3f3}.decision{padding:.8em 1em;border-radius:6px;margin:1em 0}
.adopted{background:#e7f6e7;border:1px solid #6b6}.refused{background:#fdf3e1;border:1px solid #d93}
.warn{background:#fde8e8;border:1px solid #d66;padding:.5em 1em;border-radius:6px}
.cm{display:inline-block;vertical-align:top;margin-right:2em}.diag{font-weight:bold}td.text{font-size:12px;max-width:600px}
img{max-width:100%}.small{color:#666;font-size:13px}"""


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the files of a finished search; return its path."""
    run = Path(run_dir)
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        raise LeantuneError(f"{run} holds no summary.json: not a finished `leantune icl search` folder")
    try:
        s = json.loads(summary_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LeantuneError(f"{summary_path} is damaged ({e}); rerun the search to rewrite it") from None
    cfg = s.get("config", {})
    sel = s.get("selection")
    parts = [f"<h1>SVD edit search: {_e(s.get('task'))} on {_e(s.get('model'))}</h1>"]
    src = s.get("model_source") or {}
    setup = [("model", s.get("model")), ("weights", src.get("resolved") or src.get("name")),
             ("GGUF", (src.get("gguf") or {}).get("file") if isinstance(src.get("gguf"), dict) else src.get("gguf")),
             ("strategy", s.get("strategy")), ("modules", cfg.get("modules")), ("layers", cfg.get("layers")),
             ("rates", cfg.get("rates")), ("demonstrations per class", cfg.get("shots")), ("seed", cfg.get("seed")),
             ("validation / test examples", f"{s['validation']['n']} / {s['test']['n']}"),
             ("confirmation examples", len(s.get("examples", {}).get("confirmation", [])) or "none"),
             ("selection", f"guard {sel['guard']}, ranked by {sel['metric']}" if sel else "plain (before the guard)"),
             ("candidates", (s.get("candidates") or {}).get("total"))]
    parts.append("<h2>Set-up</h2><table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in setup
                                                    if v is not None) + "</table>")
    if sel:
        cls = "adopted" if sel["adopted"] else "refused"
        head = f"Adopted: {_edits(s['chosen_edits'])}" if sel["adopted"] else \
            f"No edit adopted. Best candidate: {_edits(sel['winner'])}"
        parts.append(f'<div class="decision {cls}"><b>{head}</b><br>{_e(sel["reason"])}</div>')
        shift = sel.get("label_shift") or {}
        if shift.get("flagged"):
            parts.append(f'<div class="warn">Label-shift warning ({_e(shift["split"])} split): '
                         f'{_e("; ".join(shift["reasons"]))}</div>')
    else:
        parts.append(f'<div class="decision adopted">Chosen: {_edits(s["chosen_edits"])}</div>')

    if "stats" in s.get("test", {}):
        rows = [_stat_row("validation", s["validation"]["stats"])]
        if sel and sel.get("confirmation"):
            c = sel["confirmation"]
            rows.append(f"<tr><td>confirmation (winner)</td><td>{c['n']}</td><td colspan=2></td>"
                        f"<td>{_pct(c['change']['accuracy_change'])}</td><td>[{_pct(c['change']['accuracy_change_ci95'][0])},"
                        f" {_pct(c['change']['accuracy_change_ci95'][1])}]</td><td>{c['change']['gained']} / "
                        f"{c['change']['lost']}</td><td>one-sided {_p(c['p_one_sided'])}</td><td colspan=3></td></tr>")
        rows.append(_stat_row("test (adopted)", s["test"]["stats"]))
        if "winner" in s["test"]:
            rows.append(_stat_row("test (refused winner)", s["test"]["winner"]["stats"]))
        cal = s.get("calibration_control") or {}
        if "test" in cal:
            rows.append(_stat_row("test: calibration alone", cal["test"]["stats"]))
        parts.append("<h2>Statistics</h2><p class=small>Change in accuracy points with a paired-bootstrap 95 % "
                     "interval; McNemar's exact test on the examples whose correctness changed; the constant "
                     "predictor is what always answering the most frequent gold label scores.</p>"
                     "<table><tr><th>split</th><th>n</th><th>before</th><th>after</th><th>change</th><th>95% CI</th>"
                     "<th>gained / lost</th><th>p</th><th>balanced acc.</th><th>constant predictor</th>"
                     "<th>top prediction</th></tr>" + "".join(rows) + "</table>")
        if "test" in cal:
            verdict = ("Calibration alone matches the edit's gain: the edit may be only a label-prior shift."
                       if cal["matches_edit_gain"] else "Calibration alone does not match the edit's gain.")
            ec = cal["edit_vs_calibration"]
            parts.append(f"<h3>Calibration control</h3><p>The unedited model with contextual calibration (Zhao et "
                         f"al. 2021, content-free input 'N/A'): validation {cal['validation']['accuracy']:.3f}, test "
                         f"{cal['test']['accuracy']:.3f}. The search's best edit vs calibration alone on test: "
                         f"{_pct(ec['accuracy_change'])} "
                         f"pts, McNemar p {_p(ec['mcnemar_p'])}. <b>{verdict}</b></p>")
        elif cal:
            parts.append(f"<h3>Calibration control</h3><p>{_e(cal.get('skipped'))}</p>")
    heat = run / "heatmap.png"
    if heat.is_file():
        data = base64.b64encode(heat.read_bytes()).decode()
        parts.append(f'<h2>Validation accuracy by layer and rate</h2><img alt="heatmap" '
                     f'src="data:image/png;base64,{data}">')
    if "stats" in s.get("test", {}):
        st = s["test"]["stats"]
        parts.append("<h2>Test confusion matrices</h2>" + _confusion("unedited", st["before"])
                     + _confusion("adopted" if not sel or sel["adopted"] else "adopted (= unedited)", st["after"]))
        if "winner" in s["test"]:
            parts.append(_confusion("refused winner", s["test"]["winner"]["stats"]["after"]))
    preds = _read_jsonl(run / "test_predictions.jsonl")
    names = (s.get("test", {}).get("stats", {}).get("before", {}).get("labels")) or []
    if preds and "pred_before" in preds[0]:
        if not sel or sel["adopted"]:
            parts.append("<h2>Test examples the edit gained</h2>" + _examples(preds, names, True)
                         + "<h2>Test examples the edit lost</h2>" + _examples(preds, names, False))
        elif "pred_winner" in preds[0]:
            shown = [{**r, "pred": r["pred_winner"], "correct": r["pred_winner"] == r["label"]} for r in preds]
            parts.append("<h2>Test examples the refused winner would have gained</h2>" + _examples(shown, names, True)
                         + "<h2>... and lost</h2>" + _examples(shown, names, False))
    cands = sorted((c for c in _read_jsonl(run / "candidates.jsonl") if "val_accuracy" in c),
                   key=lambda c: -c["val_accuracy"])[:10]
    if cands:
        body = "".join(f"<tr><td>{_edits(c.get('edits', [])) if c.get('edits') else 'unedited'}</td>"
                       f"<td>{c['val_accuracy']:.3f}</td></tr>" for c in cands)
        parts.append(f"<h2>Best candidates on validation</h2><table><tr><th>edit</th><th>validation accuracy</th></tr>"
                     f"{body}</table>")
    parts.append(f"<p class=small>Rebuild with <code>leantune report {_e(run)}</code>. Files: summary.json, "
                 f"candidates.jsonl, test_predictions.jsonl, edit.json.</p>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>leantune search: {_e(s.get('task'))}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    out = run / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a page
    return out
