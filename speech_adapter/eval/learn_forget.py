"""Learn vs forget: what each trained system gained on the speech tasks and what it lost in format
following, each with a paired bootstrap CI, and the forgetting study's two plots.

The lecture notes' figure (Biderman et al. 2024, "LoRA Learns Less and Forgets Less"): one point
per fine-tuned model, x = how much it learned, y = how much it forgot; LoRA ranks trace a line
from "learns less, forgets less" to "learns more, forgets more". Here, per system:

- learned: speech accuracy − the untrained adapter's, paired by eval row (points);
- forgot IF: the text ceiling's IF rate (the frozen backbone reading the description) − the
  system's, on the format-constrained rows; forgot JSON: the same for strict JSON validity on the
  rows that ask for JSON (the scorecard's "JSON valid (strict)");
- both on speech prompts, and — where the system has text_retention rows (LoRA: the LLM itself
  moved) — on text-only prompts against the same ceiling.

forgot > 0 means below the ceiling. Rows are paired by id (`paired.paired_difference`), so every
number comes with its 95 % CI and n. The grouping keys (objective, LoRA rank, text_mix,
hard-token filter) come from each report's `training` entry, written by the pipeline.
"""

from __future__ import annotations

from pathlib import Path

from speech_adapter.eval.paired import paired_difference
from speech_adapter.eval.scorecard import json_stats

LEARN_FORGET_PNG = "learn_forget.png"
LORA_RANK_PNG = "lora_rank.png"
BASE = "untrained"
# (key, mode whose rows are compared to the text ceiling, row metric)
FORGOT = (("forgot_if_speech", "speech", "if"), ("forgot_json_speech", "speech", "json"),
          ("forgot_if_text", "text_retention", "if"), ("forgot_json_text", "text_retention", "json"))
TRAINING_KEYS = ("objective", "lora_rank", "text_mix", "hard_token_filter")


def _if_value(row: dict) -> float | None:
    return float(bool(row.get("format_ok"))) if row.get("format") else None


def _json_value(row: dict) -> float | None:
    s = json_stats([row])
    return float(s["valid"]) if s["n"] else None


def _metric_rows(rows: list[dict], mode: str, metric: str) -> list[dict]:
    """`rows` of `mode` as paired_difference rows whose score is the row's IF pass, JSON validity
    or (metric "acc") its accuracy score; rows where the metric does not apply are left out."""
    value = {"if": _if_value, "json": _json_value, "acc": lambda r: r.get("score")}[metric]
    out = []
    for r in rows:
        v = value(r) if r.get("mode") == mode else None
        if v is not None:
            out.append({"id": r["id"], "mode": metric, "score": float(v), "split": r.get("split"),
                        "task": r.get("task")})
    return out


def _paired(base: list[dict], other: list[dict]) -> dict | None:
    """Δ = other − base over rows in both: {n, diff_pts, ci_pts, base_pct, other_pct}; None if none pair."""
    d = paired_difference(base, other, mode=base[0]["mode"] if base else "")
    return None if not d["n"] else {k: d[k] for k in ("n", "diff_pts", "ci_pts", "base_pct", "other_pct")}


def build(runs: list[tuple[str, dict, list[dict] | None]]) -> dict | None:
    """The learn-vs-forget table of `runs` ((name, report.json dict, scores.jsonl rows) each).

    Needs a run named `untrained` (the learned baseline) and text_ceiling rows in some run;
    returns None without them. Returns {"base", "ceiling_from", "rows": [...]}, the untrained
    run first (learned None: it is the reference)."""
    scored = [(n, rep, rows) for n, rep, rows in runs if rows]
    base = next((rows for n, _, rows in scored if n == BASE), None)
    ceiling_from = next((n for n, _, rows in scored if any(r.get("mode") == "text_ceiling" for r in rows)), None)
    if base is None or ceiling_from is None:
        return None
    ceiling_rows = next(rows for n, _, rows in scored if n == ceiling_from)
    ceiling = {m: _metric_rows(ceiling_rows, "text_ceiling", m) for m in ("if", "json")}
    base_acc = _metric_rows(base, "speech", "acc")
    table = []
    for name, report, rows in scored:
        training = report.get("training") or {}
        entry = {"name": name, **{k: training.get(k) for k in TRAINING_KEYS}}
        entry["learned"] = None if name == BASE else _paired(base_acc, _metric_rows(rows, "speech", "acc"))
        for key, mode, metric in FORGOT:
            mine = _metric_rows(rows, mode, metric)
            entry[key] = _paired(mine, ceiling[metric]) if mine else None  # ceiling − this system
        table.append(entry)
    table.sort(key=lambda e: e["name"] != BASE)
    return {"base": BASE, "ceiling_from": ceiling_from, "rows": table}


# ---------------------------------------------------------------- markdown


def _cell(s: dict | None) -> str:
    if s is None:
        return "–"
    lo, hi = s["ci_pts"]
    return f"{s['diff_pts']:+.1f} ({lo:+.1f} … {hi:+.1f}, n {s['n']})"


def _opt(x, fmt="{}") -> str:
    return "–" if x is None else fmt.format(x)


def _plots(table: dict) -> list[str]:
    """The plot files `write` draws for this table: the rank curve only where some system has LoRA."""
    return [LEARN_FORGET_PNG] + ([LORA_RANK_PNG] if any(e.get("lora_rank") for e in table["rows"]) else [])


def markdown(table: dict) -> str:
    """The "Learn vs forget" section of compare.md: one row per system."""
    lines = ["## Learn vs forget", "",
             "learned: speech accuracy − the untrained adapter's; forgot: the text ceiling's rate − this "
             "system's (> 0: lost, < 0: above the ceiling), IF on format-constrained rows, JSON = strict "
             "validity on rows asking for JSON; speech = with audio, text = text_retention (LoRA: the "
             "LLM itself on text-only prompts). Points, paired by eval row: Δ (95 % bootstrap CI, n). "
             f"Plots: {', '.join(_plots(table))}.", "",
             "| system | objective | LoRA r | text_mix | hard-token | learned Δ acc | forgot IF (speech) | "
             "forgot JSON (speech) | forgot IF (text) | forgot JSON (text) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in table["rows"]:
        learned = "ref" if e["name"] == table["base"] else _cell(e["learned"])
        rank = "none" if e["lora_rank"] == 0 else _opt(e["lora_rank"])
        lines.append(f"| {e['name']} | {_opt(e['objective'])} | {rank} | {_opt(e['text_mix'], '{:g}')} | "
                     f"{_opt(e['hard_token_filter'], '{:g}')} | {learned} | "
                     + " | ".join(_cell(e[k]) for k, _, _ in FORGOT) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=100)
    _pyplot().close(fig)
    tmp.replace(path)


def _err(s: dict) -> list[list[float]]:
    """matplotlib's asymmetric error bar [[below], [above]] from a paired stat's CI."""
    return [[s["diff_pts"] - s["ci_pts"][0]], [s["ci_pts"][1] - s["diff_pts"]]]


def _colors(table: dict) -> dict:
    plt = _pyplot()
    objectives = sorted({str(e["objective"]) for e in table["rows"] if e["objective"]})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {o: cycle[i % len(cycle)] for i, o in enumerate(objectives)}


def plot_scatter(table: dict, path) -> None:
    """Learned (x) vs forgotten (y), IF and JSON side by side; filled = speech prompts, hollow =
    text-only prompts (text_retention), joined to the same system's speech point."""
    plt = _pyplot()
    colors = _colors(table)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, metric in zip(axes, ("if", "json")):
        for e in table["rows"]:
            x = 0.0 if e["name"] == table["base"] else (e["learned"] or {}).get("diff_pts")
            speech, text = e[f"forgot_{metric}_speech"], e[f"forgot_{metric}_text"]
            if x is None or speech is None:
                continue
            color = colors.get(str(e["objective"]), "grey")
            xerr = None if e["learned"] is None else _err(e["learned"])
            ax.errorbar([x], [speech["diff_pts"]], xerr=xerr, yerr=_err(speech), fmt="o", color=color,
                        ecolor=color, alpha=0.9, capsize=2)
            ax.annotate(e["name"], (x, speech["diff_pts"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
            if text is not None:
                ax.plot([x, x], [speech["diff_pts"], text["diff_pts"]], color=color, lw=0.6, alpha=0.5)
                ax.plot([x], [text["diff_pts"]], "o", mfc="none", color=color)
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("learned: Δ speech accuracy vs untrained (points)")
        ax.set_ylabel(f"forgot: {'IF rate' if metric == 'if' else 'strict JSON validity'} "
                      "below the text ceiling (points)")
        ax.set_title(f"learn vs forget: {'IF' if metric == 'if' else 'JSON'}")
    for o, c in colors.items():
        axes[0].plot([], [], "o", color=c, label=o)
    axes[0].plot([], [], "o", color="grey", label="speech prompts")
    axes[0].plot([], [], "o", mfc="none", color="grey", label="text-only prompts (LoRA)")
    axes[0].legend(fontsize=8)
    _save(fig, path)


def plot_rank_curve(table: dict, path) -> None:
    """LoRA rank (x; 0 = no LoRA, the adapter alone) vs learned and forgotten (IF), one line per
    objective; only systems that differ from their objective's base in the LoRA rank alone."""
    plt = _pyplot()
    colors = _colors(table)
    pure = [e for e in table["rows"] if e["name"] != table["base"] and e["objective"] and e["lora_rank"] is not None
            and not e["text_mix"] and not e["hard_token_filter"]]
    ranks = sorted({int(e["lora_rank"]) for e in pure})
    pos = {r: i for i, r in enumerate(ranks)}
    fig, (learn_ax, forget_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for objective in sorted({e["objective"] for e in pure}):
        pts = sorted((e for e in pure if e["objective"] == objective), key=lambda e: e["lora_rank"])
        color = colors.get(str(objective), "grey")
        for ax, key, style, label in ((learn_ax, "learned", "-o", objective),
                                      (forget_ax, "forgot_if_speech", "-o", f"{objective}, speech"),
                                      (forget_ax, "forgot_if_text", "--s", f"{objective}, text-only")):
            xy = [(pos[int(e["lora_rank"])], e[key]["diff_pts"]) for e in pts if e[key] is not None]
            if xy:
                ax.plot(*zip(*xy), style, color=color, label=label)
    for ax, ylabel in ((learn_ax, "learned: Δ speech accuracy vs untrained (points)"),
                       (forget_ax, "forgot: IF rate below the text ceiling (points)")):
        ax.set_xticks(range(len(ranks)))
        ax.set_xticklabels(["none" if r == 0 else str(r) for r in ranks])
        ax.set_xlabel("LoRA rank on the LLM (none = adapter only)")
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="black", lw=0.6)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not pure:
        learn_ax.text(0.5, 0.5, "no variant differs in LoRA rank alone", ha="center", transform=learn_ax.transAxes)
    learn_ax.set_title("what it learned, by LoRA rank")
    forget_ax.set_title("what it forgot, by LoRA rank")
    _save(fig, path)


def write(table: dict, out_dir) -> dict[str, Path]:
    """The scatter into `out_dir`, and the LoRA-rank curve where some system trained LoRA (without
    one the curve has a single x position and says nothing); returns the paths written."""
    out = Path(out_dir)
    paths = {"scatter": out / LEARN_FORGET_PNG}
    plot_scatter(table, paths["scatter"])
    if LORA_RANK_PNG in _plots(table):
        paths["rank_curve"] = out / LORA_RANK_PNG
        plot_rank_curve(table, paths["rank_curve"])
    return paths
