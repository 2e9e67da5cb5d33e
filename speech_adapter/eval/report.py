"""Eval reports: report.json, report.md tables, PNG plots, and side-by-side comparison of runs.

The comparison is how the forgetting study is shown (the lecture notes' JSON-lost-after-epoch-3
story; DeSTA2 vs task SFT): one column per run, rows for accuracy per task and split and for the
instruction-following rate per constraint, speech vs the text backbone.
"""

from __future__ import annotations

import json
from pathlib import Path

from speech_adapter.errors import DataError
from speech_adapter.utils.io import write_json_atomic, write_text_atomic

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
TASKS_PNG = "tasks.png"
IF_PNG = "if_rates.png"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"


def _fmt(x, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:+.2f}"


def summary_markdown(report: dict) -> str:
    """Markdown tables: accuracy per task (seen/unseen) per mode, IF rate per constraint, Δ."""
    modes = report.get("modes", {})
    lines = [f"# Eval report: {report.get('system', '?')}", "",
             f"rows: {report.get('n_rows', '?')}; scores in % (WER tasks as 100·(1−WER)); Δ as a fraction", ""]
    skipped = {m: n for m, n in (report.get("skipped_rows") or {}).items() if n}
    if skipped:  # speech needs audio, text modes need a description
        lines += ["skipped (no audio / no description): "
                  + ", ".join(f"{m} {n}" for m, n in skipped.items()), ""]
    names = list(modes)
    if names:
        lines += ["## Accuracy per task (seen / unseen)", "",
                  "| task | metric | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        tasks = sorted({t for m in modes.values() for t in m["tasks"]})
        for t in tasks:
            cells, metric = [], ""
            for m in names:
                v = modes[m]["tasks"].get(t)
                metric = metric or (v or {}).get("metric", "")
                cells.append("–" if v is None else f"{_fmt(v['seen'])} / {_fmt(v['unseen'])}")
            lines.append(f"| {t} | {metric} | " + " | ".join(cells) + " |")
        lines.append("| **all** | | " + " | ".join(
            f"{_fmt(modes[m]['accuracy_seen'])} / {_fmt(modes[m]['accuracy_unseen'])}" for m in names) + " |")
        lines += ["", "## Instruction following (constraint pass rate)", "",
                  "| constraint | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        cons = sorted({c for m in modes.values() for c in m["constraints"]})
        for c in cons:
            lines.append(f"| {c} | " + " | ".join(
                _fmt(modes[m]["constraints"].get(c, {}).get("rate")) for m in names) + " |")
        lines.append("| **IF rate** | " + " | ".join(_fmt(modes[m]["if_rate"]) for m in names) + " |")
    delta = report.get("delta") or {}
    if delta:
        lines += ["", "## Forgetting Δ = (IF_mode − IF_text_ceiling) / IF_text_ceiling", "",
                  "| mode | Δ IF |", "|---|---|"]
        lines += [f"| {m} | {_fmt(d['if_rate'], pct=False)} |" for m, d in delta.items()]
    return "\n".join(lines) + "\n"


def _bar_plot(path, groups: list[str], series: dict[str, list], title: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(groups) * max(1, len(series)) + 2), 4))
    width = 0.8 / max(1, len(series))
    for k, (name, vals) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [0 if v is None else 100 * v for v in vals], width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=45, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_report(report: dict, out_dir) -> dict[str, Path]:
    """Write report.json, report.md, tasks.png and if_rates.png into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / REPORT_JSON, "md": out / REPORT_MD, "tasks_png": out / TASKS_PNG,
             "if_png": out / IF_PNG}
    write_json_atomic(paths["json"], report)
    write_text_atomic(paths["md"], summary_markdown(report))
    modes = report.get("modes", {})
    focus_mode = "speech" if "speech" in modes else next(iter(modes), "none")
    focus = modes.get(focus_mode, {"tasks": {}})
    tasks = sorted(focus["tasks"])
    _bar_plot(paths["tasks_png"], tasks,
              {"seen": [focus["tasks"][t]["seen"] for t in tasks],
               "unseen": [focus["tasks"][t]["unseen"] for t in tasks]},
              f"{report.get('system', '')} ({focus_mode}): accuracy per task", "score (%)")
    cons = sorted({c for m in modes.values() for c in m["constraints"]})
    _bar_plot(paths["if_png"], cons,
              {m: [modes[m]["constraints"].get(c, {}).get("rate") for c in cons] for m in modes},
              "IF rate per constraint: speech vs backbone", "pass rate (%)")
    return paths


def load_report(path) -> dict:
    """A report.json, or the report.json inside a run dir."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_JSON
    if not p.exists():
        raise DataError(f"{p}: no eval report here (run `speech-adapter eval run` first)")
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{p}: not a valid report.json ({e})") from None
    if "modes" not in report:
        raise DataError(f"{p}: report.json lacks the key 'modes'")
    report.setdefault("system", p.parent.name)
    return report


def _names(reports: list[dict]) -> list[str]:
    names, seen = [], {}
    for r in reports:
        n = str(r.get("system") or "run")
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return names


def compare_markdown(reports: list[dict]) -> str:
    """Side-by-side table: one column per run; accuracy per task, IF per constraint, Δ."""
    names = _names(reports)
    head = "| | " + " | ".join(names) + " |"
    sep = "|---|" + "---|" * len(names)

    def row(label, vals):
        return f"| {label} | " + " | ".join(vals) + " |"

    speech = [r["modes"].get("speech", {}) for r in reports]
    ceil = [r["modes"].get("text_ceiling", {}) for r in reports]
    ret = [r["modes"].get("text_retention", {}) for r in reports]
    lines = ["# Run comparison", "", "## Speech accuracy per task (seen / unseen, %)", "", head, sep]
    for t in sorted({t for s in speech for t in s.get("tasks", {})}):
        lines.append(row(t, [f"{_fmt(s['tasks'][t]['seen'])} / {_fmt(s['tasks'][t]['unseen'])}"
                             if t in s.get("tasks", {}) else "–" for s in speech]))
    lines += ["", "## Instruction following (%)", "", head, sep]
    for c in sorted({c for s in speech + ceil + ret for c in s.get("constraints", {})}):
        lines.append(row(c, [" / ".join(_fmt(m.get("constraints", {}).get(c, {}).get("rate"))
                                        for m in (s, k, t)) for s, k, t in zip(speech, ceil, ret)]))
    lines.append(row("**IF rate**", [" / ".join(_fmt(m.get("if_rate")) for m in (s, k, t))
                                     for s, k, t in zip(speech, ceil, ret)]))
    lines.append("")
    lines.append("cells: speech / text_ceiling / text_retention")
    lines += ["", "## Forgetting Δ IF vs text ceiling", "", head, sep]
    for mode in ("speech", "text_retention"):
        lines.append(row(mode, [_fmt((r.get("delta") or {}).get(mode, {}).get("if_rate"), pct=False)
                                for r in reports]))
    return "\n".join(lines) + "\n"


def compare(paths, out_dir=None) -> str:
    """Compare runs or reports; writes compare.md and compare.png when `out_dir` is given."""
    reports = [load_report(p) for p in paths]
    if not reports:
        raise DataError("eval compare needs at least one run dir or report.json")
    md = compare_markdown(reports)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / COMPARE_MD, md)
        names = _names(reports)
        groups = ["acc seen", "acc unseen", "IF speech", "IF text ceiling", "IF text retention"]
        series = {}
        for n, r in zip(names, reports):
            m = r["modes"]
            series[n] = [m.get("speech", {}).get("accuracy_seen"), m.get("speech", {}).get("accuracy_unseen"),
                         m.get("speech", {}).get("if_rate"), m.get("text_ceiling", {}).get("if_rate"),
                         m.get("text_retention", {}).get("if_rate")]
        _bar_plot(out / COMPARE_PNG, groups, series, "Run comparison", "%")
    return md
