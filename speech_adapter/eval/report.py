"""Eval reports: report.json, report.md tables, PNG plots, and side-by-side comparison of runs.

Both report.md and compare.md open with the same scorecard block (`scorecard`, also written as
scorecard.json beside them); the tables below it are the per-mode details.

The comparison is how the forgetting study is shown (DeSTA2 vs
task SFT): one column per run, rows for accuracy per task and split and for the
instruction-following rate per constraint, speech vs the text backbone. When the runs' scores.jsonl
are there, it also pairs rows by id against the first run: mean difference with a paired bootstrap
CI (Efron & Tibshirani 1993) and an exact sign test on the discordant pairs (McNemar's test, exact
form, for 0/1 scores), so "run B beats run A" is a measured claim rather than a read of two means.
"""

from __future__ import annotations

import json
from pathlib import Path

from speech_adapter.errors import DataError
from speech_adapter.eval import learn_forget, scorecard
from speech_adapter.eval.paired import paired_difference, sign_test_p  # noqa: F401  (sign_test_p: public here too)
from speech_adapter.utils.io import read_jsonl, write_json_atomic, write_text_atomic

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
TASKS_PNG = "tasks.png"
IF_PNG = "if_rates.png"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"
SCORES_JSONL = "scores.jsonl"
PAIRED_JSON = "paired.json"


def _fmt(x, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:+.2f}"


def summary_markdown(report: dict, scorecard_md: str | None = None) -> str:
    """Markdown: the scorecard block when given (see `scorecard.markdown`), then accuracy per task
    (seen/unseen) per mode, IF rate per constraint, Δ."""
    modes = report.get("modes", {})
    lines = [f"# Eval report: {report.get('system', '?')}", ""]
    if scorecard_md:
        lines += [scorecard_md.rstrip(), "", "## Details", ""]
    lines += [f"rows: {report.get('n_rows', '?')}; scores in % (WER tasks as 100·(1−WER)); Δ as a fraction", ""]
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


def write_report(report: dict, out_dir, peers=()) -> dict[str, Path]:
    """Write report.json, report.md (the scorecard on top), scorecard.json, tasks.png and
    if_rates.png into `out_dir`.

    The scorecard reads out_dir/scores.jsonl; `peers` are other systems' eval dirs on the same
    suite (e.g. the untrained adapter's) shown beside this one and paired against it. A peer
    without a scores.jsonl is left out.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / REPORT_JSON, "md": out / REPORT_MD, "tasks_png": out / TASKS_PNG,
             "if_png": out / IF_PNG, "scorecard": out / scorecard.SCORECARD_JSON}
    write_json_atomic(paths["json"], report)
    runs, trained = [], {}
    for peer in map(Path, peers):
        rows = _load_scores(peer / REPORT_JSON)
        if rows is not None:
            peer_report = load_report(peer) if (peer / REPORT_JSON).exists() else {"system": peer.name}
            runs.append((str(peer_report["system"]), rows))
            trained[str(peer_report["system"])] = peer_report.get("trained_tasks")
    own = _load_scores(out / REPORT_JSON)
    if own is not None:
        runs.append((str(report.get("system", out.name)), own))
        trained[str(report.get("system", out.name))] = report.get("trained_tasks")
    card = scorecard.build(runs, trained)
    write_json_atomic(paths["scorecard"], card)
    write_text_atomic(paths["md"], summary_markdown(report, scorecard.markdown(card)))
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


def _report_path(path) -> Path:
    p = Path(path)
    return p / REPORT_JSON if p.is_dir() else p


def load_report(path) -> dict:
    """A report.json, or the report.json inside a run dir."""
    p = _report_path(path)
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


def paired_comparison(names: list[str], score_rows: list[list[dict] | None], mode: str = "speech",
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """`paired_difference` of every run against the first; runs whose rows are None are listed in `skipped`."""
    result = {"mode": mode, "base": names[0], "n_boot": n_boot, "seed": seed, "runs": {}, "skipped": {}}
    missing = f"no {SCORES_JSONL} next to its {REPORT_JSON}"
    if score_rows[0] is None:
        result["skipped"][names[0]] = missing + " (the base run, so no run is paired)"
        return result
    for name, rows in zip(names[1:], score_rows[1:]):
        if rows is None:
            result["skipped"][name] = missing
        else:
            result["runs"][name] = paired_difference(score_rows[0], rows, mode, n_boot, seed)
    return result


def _pts(x) -> str:
    return "–" if x is None else f"{x:+.1f}"


def paired_markdown(paired: dict) -> list[str]:
    """Lines of the paired section: one table row per run vs the base, then Δ per split and task."""
    base, runs = paired["base"], paired["runs"]
    lines = [f"## Paired difference vs {base} ({paired['mode']}, rows scored in both)", ""]
    if runs:
        lines += ["| run | n | base % | run % | Δ points | 95 % CI | wins / losses / ties | sign-test p | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, s in runs.items():
            ci = "–" if s["ci_pts"] is None else f"{_pts(s['ci_pts'][0])} … {_pts(s['ci_pts'][1])}"
            pct = ["–" if v is None else f"{v:.1f}" for v in (s["base_pct"], s["other_pct"])]
            lines.append(f"| {name} | {s['n']} | {pct[0]} | {pct[1]} | {_pts(s['diff_pts'])} | {ci} | "
                         f"{s['wins']} / {s['losses']} / {s['ties']} | {s['sign_p']:.3g} | {s['verdict']} |")
        lines += ["", f"verdict: better / worse when the CI excludes 0; bootstrap {paired['n_boot']} "
                  f"resamples of row ids, seed {paired['seed']}; sign test on wins vs losses"]
        lines += ["", "### Δ points per split and task (95 % CI, n)", "",
                  "| | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
        groups = [("by_split", g) for g in sorted({g for s in runs.values() for g in s["by_split"]}, key=str)]
        groups += [("by_task", g) for g in sorted({g for s in runs.values() for g in s["by_task"]}, key=str)]
        for kind, g in groups:
            cells = []
            for s in runs.values():
                c = s[kind].get(g)
                cells.append("–" if c is None or not c["n"] else
                             f"{_pts(c['diff_pts'])} ({_pts(c['ci_pts'][0])} … {_pts(c['ci_pts'][1])}, n {c['n']})")
            label = f"*{g}*" if kind == "by_split" else str(g)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, why in paired["skipped"].items():
        lines += ["", f"{name}: {why}; paired comparison skipped"]
    return lines


def compare_markdown(reports: list[dict], paired: dict | None = None, scorecard_md: str | None = None,
                     learn_forget_md: str | None = None) -> str:
    """Side-by-side table: one column per run; accuracy per task, IF per constraint, Δ.

    `scorecard_md` (see `scorecard.markdown`) opens the page, `learn_forget_md` (see
    `learn_forget.markdown`) follows it; `paired` (from `paired_comparison`) adds the
    paired-difference section at the end.
    """
    names = _names(reports)
    head = "| | " + " | ".join(names) + " |"
    sep = "|---|" + "---|" * len(names)

    def row(label, vals):
        return f"| {label} | " + " | ".join(vals) + " |"

    speech = [r["modes"].get("speech", {}) for r in reports]
    ceil = [r["modes"].get("text_ceiling", {}) for r in reports]
    ret = [r["modes"].get("text_retention", {}) for r in reports]
    lines = ["# Run comparison", ""]
    if scorecard_md:
        lines += [scorecard_md.rstrip(), ""]
    if learn_forget_md:
        lines += [learn_forget_md.rstrip(), ""]
    lines += ["## Speech accuracy per task (seen / unseen, %)", "", head, sep]
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
    for mode in ("speech", "text_retention", "cascade"):
        lines.append(row(mode, [_fmt((r.get("delta") or {}).get(mode, {}).get("if_rate"), pct=False)
                                for r in reports]))
    if paired is not None and len(reports) > 1:
        lines += [""] + paired_markdown(paired)
    return "\n".join(lines) + "\n"


def _load_scores(path) -> list[dict] | None:
    p = _report_path(path).with_name(SCORES_JSONL)
    return read_jsonl(p) if p.exists() else None


def compare(paths, out_dir=None) -> str:
    """Compare runs or reports; returns the markdown.

    With `out_dir`, writes compare.md, compare.png and paired.json (the paired numbers, see
    `paired_comparison`). A scores.jsonl beside each report.json enables the paired section; a run
    without one is noted and skipped there. With an `untrained` run and text_ceiling rows, the
    learn-vs-forget table (`learn_forget`) joins compare.md and scorecard.json, and its two plots
    (learn_forget.png, lora_rank.png) are written too. Raises DataError for a missing or malformed
    report.
    """
    paths = list(paths)
    reports = [load_report(p) for p in paths]
    if not reports:
        raise DataError("eval compare needs at least one run dir or report.json")
    names = _names(reports)
    scores = [_load_scores(p) for p in paths]
    paired = paired_comparison(names, scores)
    card = scorecard.build([(n, rows) for n, rows in zip(names, scores) if rows is not None],
                           {n: r.get("trained_tasks") for n, r in zip(names, reports)})
    lf = learn_forget.build(list(zip(names, reports, scores)))
    if lf is not None:
        card["learn_forget"] = lf
    md = compare_markdown(reports, paired, scorecard.markdown(card), lf and learn_forget.markdown(lf))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / COMPARE_MD, md)
        write_json_atomic(out / PAIRED_JSON, paired)
        write_json_atomic(out / scorecard.SCORECARD_JSON, card)
        groups = ["acc seen", "acc unseen", "IF speech", "IF text ceiling", "IF text retention"]
        series = {}
        for n, r in zip(names, reports):
            m = r["modes"]
            series[n] = [m.get("speech", {}).get("accuracy_seen"), m.get("speech", {}).get("accuracy_unseen"),
                         m.get("speech", {}).get("if_rate"), m.get("text_ceiling", {}).get("if_rate"),
                         m.get("text_retention", {}).get("if_rate")]
        _bar_plot(out / COMPARE_PNG, groups, series, "Run comparison", "%")
        if lf is not None:
            learn_forget.write(lf, out)
    return md
