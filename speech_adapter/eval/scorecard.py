"""The scorecard: the block that opens every report.md and compare.md (and scorecard.json).

One column per system and mode: the speech model of each adapter (untrained, trained, variants),
its text retention, the cascade (Whisper's transcript → backbone) and the text ceiling (backbone
reading the description); the last two do not depend on the adapter and appear once. Rows:

- accuracy per task, seen and unseen templates apart (DeSTA2, Dynamic-SUPERB);
- IF rate, the share of format-constrained rows passing all their constraints, and Speech-IFEval's
  relative Δ = (IF − IF_ceiling) / IF_ceiling (Lu et al., 2025);
- on rows asking for JSON: strict validity, validity inside a ```json fence, the required keys,
  and the answer under them correct where the task is scoreable;
- WER of transcription answers (corpus-level: edits over reference words);
- degenerate replies: loops, empty replies, replies cut off at max_new_tokens;
- each adapter against the untrained one, task by task (paired bootstrap, `paired.paired_difference`),
  flagged when it is worse — above all on a task it was not trained on;
- 20 raw replies, the same rows for every column, side by side.
"""

from __future__ import annotations

import hashlib
import re

from speech_adapter.eval.constraints import parse_json
from speech_adapter.eval.paired import paired_difference
from speech_adapter.eval.runner import BACKBONE_MODES
from speech_adapter.eval.scoring import extract_answer, normalize, quoted_span, spoken_digits, wer

SCORECARD_JSON = "scorecard.json"
COLUMN_ORDER = ("speech", "text_retention", "cascade", "text_ceiling")
N_RAW = 20
LOOP_UNIT_WORDS = 4  # a unit of 1-4 words …
LOOP_REPEATS = 4  # … said this many times in a row is a loop
LOOP_SHARE = 0.5  # or more than this share of the reply's word trigrams repeat earlier ones
LOOP_MIN_WORDS = 8  # (the share needs a reply at least this long)
_CHAR_LOOP = re.compile(r"(.{1,10}?)\1{9,}", re.DOTALL)  # "ababab…" with no spaces to split on


def is_loop(text: str) -> bool:
    """A reply stuck repeating itself: a 1-4-word unit ≥ 4 times in a row ("Female, Female,
    Female, Female"), most of its word trigrams repeating earlier ones, or a short unit of
    characters ≥ 10 times in a row."""
    words = normalize(text).split()
    for n in range(1, LOOP_UNIT_WORDS + 1):
        for i in range(len(words) - n * LOOP_REPEATS + 1):
            unit = words[i:i + n]
            if all(words[i + k * n:i + (k + 1) * n] == unit for k in range(1, LOOP_REPEATS)):
                return True
    if len(words) >= LOOP_MIN_WORDS:
        grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        seen, repeats = set(), 0
        for g in grams:
            repeats += g in seen
            seen.add(g)
        if repeats > LOOP_SHARE * len(grams):
            return True
    return bool(_CHAR_LOOP.search(str(text or "")))


def degenerate(output: str, stop: str | None) -> dict[str, bool | None]:
    """{"loop", "empty", "cut_off"} of one reply; cut_off is None when the stop is unknown."""
    return {"loop": is_loop(output), "empty": not str(output or "").strip(),
            "cut_off": None if stop is None else stop == "length"}


def _mean(xs) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _json_keys(row: dict) -> list[str] | None:
    """The keys a row's JSON constraint asks for ([] for any JSON), or None without one."""
    for c in row.get("constraints") or []:
        if isinstance(c, dict) and c.get("id") == "json":
            return list((c.get("kwargs") or {}).get("keys") or [])
    if any(k.split("#")[0] == "json" for k in row.get("format") or {}):
        return []  # an older scores.jsonl without the constraints themselves
    return None


def json_stats(rows: list[dict]) -> dict:
    """Counts over rows asking for JSON: strict parse, parse inside a fence, keys, answer correct."""
    n = valid = fenced = keys_ok = 0
    answers = []
    for r in rows:
        keys = _json_keys(r)
        if keys is None:
            continue
        n += 1
        out = r.get("output") or ""
        valid += parse_json(out) is not None
        value = parse_json(out, lenient=True)
        fenced += value is not None
        has_keys = value is not None and (not keys or (isinstance(value, dict) and all(k in value for k in keys)))
        keys_ok += has_keys
        if r.get("score") is not None:
            answers.append(float(r["score"]) if has_keys else 0.0)
    return {"n": n, "valid": valid, "fenced_valid": fenced, "keys": keys_ok,
            "answer_n": len(answers), "answer": _mean(answers)}


def corpus_wer(pairs) -> float | None:
    """Σ edits / Σ reference words over (hypothesis, reference) pairs; None without any."""
    edits = words = 0.0
    for hyp, ref in pairs:
        n = len(spoken_digits(normalize(ref).split()))
        edits += wer(hyp, ref) * max(n, 1)
        words += max(n, 1)
    return edits / words if words else None


def column_stats(rows: list[dict]) -> dict:
    """Every scorecard number of one column (one system in one mode) from its scored rows."""
    tasks = {}
    for task in sorted({r["task"] for r in rows}):
        tr = [r for r in rows if r["task"] == task]
        tasks[task] = {"metric": tr[0].get("metric"),
                       "seen": _mean(r["score"] for r in tr if r.get("split") == "seen"),
                       "unseen": _mean(r["score"] for r in tr if r.get("split") == "unseen"),
                       "n_seen": sum(r.get("split") == "seen" for r in tr),
                       "n_unseen": sum(r.get("split") == "unseen" for r in tr)}
    constrained = [r for r in rows if r.get("format")]
    deg = [degenerate(r.get("output") or "", r.get("stop")) for r in rows]
    known = [d["cut_off"] for d in deg if d["cut_off"] is not None]
    wer_rows = [r for r in rows if r.get("metric") == "wer" and r.get("label") is not None]
    asr = [r for r in rows if r.get("asr_wer") is not None]
    return {
        "n": len(rows),
        "accuracy_seen": _mean(r["score"] for r in rows if r.get("split") == "seen"),
        "accuracy_unseen": _mean(r["score"] for r in rows if r.get("split") == "unseen"),
        "tasks": tasks,
        "if_n": len(constrained),
        "if_rate": _mean(bool(r.get("format_ok")) for r in constrained),
        "json": json_stats(rows),
        "wer_n": len(wer_rows),
        "wer": corpus_wer((quoted_span(extract_answer(r.get("output"))), r["label"]) for r in wer_rows),
        "asr_wer": _mean(r["asr_wer"] for r in asr),  # the cascade's own transcripts
        "degenerate": {"loop": _mean(d["loop"] for d in deg), "empty": _mean(d["empty"] for d in deg),
                       "cut_off": _mean(known), "cut_off_n": len(known),
                       "any": _mean(d["loop"] or d["empty"] or bool(d["cut_off"]) for d in deg)},
    }


def columns(runs: list[tuple[str, list[dict]]]) -> list[dict]:
    """[{name, system, mode, rows}]: speech per system, then retention, cascade, text ceiling.

    The adapter-free modes come from the first run that has them (every system shares them)."""
    cols, taken = [], set()
    for mode in sorted({r["mode"] for _, rows in runs for r in rows},
                       key=lambda m: COLUMN_ORDER.index(m) if m in COLUMN_ORDER else 99):
        for system, rows in runs:
            mine = [r for r in rows if r["mode"] == mode]
            if not mine or mode in taken:
                continue
            if mode in BACKBONE_MODES:
                taken.add(mode)
                cols.append({"name": mode, "system": system, "mode": mode, "rows": mine})
            else:
                name = f"{system} {mode}"
                cols.append({"name": name, "system": system, "mode": mode, "rows": mine})
    return cols


def paired_tasks(cols: list[dict], trained_tasks: dict[str, list[str] | None] | None = None) -> dict:
    """Each adapter's speech rows against the untrained one's (or the first speech column's),
    per task: Δ points, 95 % paired-bootstrap CI, verdict, and a flag when it is worse."""
    speech = [c for c in cols if c["mode"] == "speech"]
    base = next((c for c in speech if c["system"] == "untrained"), speech[0] if speech else None)
    out = {"base": base["name"] if base else None, "runs": {}}
    for c in speech:
        if c is base:
            continue
        d = paired_difference(base["rows"], c["rows"], "speech")
        trained = (trained_tasks or {}).get(c["system"])
        tasks = {}
        for task, s in d["by_task"].items():
            not_trained = None if trained is None else task not in trained
            tasks[task] = {k: s[k] for k in ("n", "diff_pts", "ci_pts", "verdict")}
            tasks[task].update(not_trained=not_trained, flag=s["verdict"] == "worse")
        out["runs"][c["name"]] = {"overall": {k: d[k] for k in ("n", "diff_pts", "ci_pts", "verdict")},
                                  "by_split": {k: {x: v[x] for x in ("n", "diff_pts", "ci_pts", "verdict")}
                                               for k, v in d["by_split"].items()},
                                  "tasks": tasks}
    return out


def _rank(row_id) -> str:
    return hashlib.sha256(str(row_id).encode()).hexdigest()


def raw_replies(cols: list[dict], n: int = N_RAW) -> list[dict]:
    """`n` rows (round robin over tasks, a stable hash order within each) with every column's reply."""
    by_id: dict = {}
    for c in cols:
        for r in c["rows"]:
            by_id.setdefault(r["id"], r)
    queues = {t: sorted((i for i, r in by_id.items() if r["task"] == t), key=_rank)
              for t in sorted({r["task"] for r in by_id.values()})}
    picked: list = []
    while len(picked) < n and any(queues.values()):
        for q in queues.values():
            if q and len(picked) < n:
                picked.append(q.pop(0))
    out = []
    for i in picked:  # the instruction from any column that recorded it (older scores did not)
        row = next((r for c in cols for r in c["rows"] if r["id"] == i and r.get("instruction")), by_id[i])
        replies = {}
        for c in cols:
            r = next((x for x in c["rows"] if x["id"] == i), None)
            replies[c["name"]] = None if r is None else {"output": r.get("output") or "", "stop": r.get("stop")}
        out.append({"id": i, "task": row["task"], "split": row.get("split"),
                    "instruction": row.get("instruction"), "label": row.get("label"),
                    "replies": replies})
    return out


def build(runs: list[tuple[str, list[dict]]], trained_tasks: dict | None = None, n_raw: int = N_RAW) -> dict:
    """The scorecard of `runs` ((system name, scores.jsonl rows) each), as a JSON-ready dict."""
    cols = columns(runs)
    stats = {c["name"]: dict(column_stats(c["rows"]), system=c["system"], mode=c["mode"]) for c in cols}
    ceiling = next((s for s in stats.values() if s["mode"] == "text_ceiling"), None)
    for s in stats.values():
        ref = (ceiling or {}).get("if_rate")
        s["if_delta"] = None if s is ceiling or s["if_rate"] is None or not ref else (s["if_rate"] - ref) / ref
    paired = paired_tasks(cols, trained_tasks)
    flags = [{"run": name, "task": task, **{k: v[k] for k in ("diff_pts", "ci_pts", "not_trained")}}
             for name, run in paired["runs"].items() for task, v in run["tasks"].items() if v["flag"]]
    return {"columns": stats, "paired": paired, "flags": flags, "raw_replies": raw_replies(cols, n_raw)}


# ---------------------------------------------------------------- markdown


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _count(k: int, n: int) -> str:
    return "–" if not n else f"{k}/{n} ({100 * k / n:.0f} %)"


def escape_cell(text) -> str:
    """Text shown verbatim inside a markdown table cell: pipes, newlines and angle brackets escaped."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def markdown(card: dict, title: str = "## Scorecard") -> str:
    """The scorecard block: the numbers table, the paired per-task table, the raw replies."""
    cols = card["columns"]
    names = list(cols)
    lines = [title, ""]
    if not names:
        return "\n".join(lines + ["no scored rows (scores.jsonl) to build a scorecard from", ""])
    lines += ["scores in % (WER tasks as 100·(1−WER)); IF: format-constrained rows passing all their "
              "constraints; Δ IF = (IF − IF_text_ceiling) / IF_text_ceiling", "",
              "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(cols[n]) for n in names) + " |")

    row("rows", lambda s: str(s["n"]))
    row("**accuracy seen / unseen**", lambda s: f"{_pct(s['accuracy_seen'])} / {_pct(s['accuracy_unseen'])}")
    for task in sorted({t for s in cols.values() for t in s["tasks"]}):
        metric = next((s["tasks"][task]["metric"] for s in cols.values() if task in s["tasks"]), "")
        row(f"{task} ({metric})", lambda s, t=task: "–" if t not in s["tasks"] else
            f"{_pct(s['tasks'][t]['seen'])} / {_pct(s['tasks'][t]['unseen'])}")
    row("**IF rate**", lambda s: f"{_pct(s['if_rate'])} (n {s['if_n']})" if s["if_n"] else "–")
    row("Δ IF vs text ceiling", lambda s: "ref" if s["mode"] == "text_ceiling" and s["if_rate"] is not None
        else "–" if s["if_delta"] is None else f"{s['if_delta']:+.2f}")
    row("JSON valid (strict)", lambda s: _count(s["json"]["valid"], s["json"]["n"]))
    row("JSON valid in a fence", lambda s: _count(s["json"]["fenced_valid"], s["json"]["n"]))
    row("JSON keys present", lambda s: _count(s["json"]["keys"], s["json"]["n"]))
    row("JSON answer correct", lambda s: "–" if s["json"]["answer"] is None else
        f"{_pct(s['json']['answer'])} (n {s['json']['answer_n']})")
    row("WER, transcription answers", lambda s: "–" if s["wer"] is None else f"{_pct(s['wer'])} (n {s['wer_n']})")
    if any(s["asr_wer"] is not None for s in cols.values()):
        row("WER, cascade's Whisper transcript", lambda s: _pct(s["asr_wer"]))
    row("**degenerate replies**", lambda s: _pct(s["degenerate"]["any"]))
    row("· loops", lambda s: _pct(s["degenerate"]["loop"]))
    row("· empty", lambda s: _pct(s["degenerate"]["empty"]))
    row("· cut off at max_new_tokens", lambda s: "–" if not s["degenerate"]["cut_off_n"] else
        _pct(s["degenerate"]["cut_off"]))
    lines += _paired_lines(card) + _raw_lines(card)
    return "\n".join(lines) + "\n"


def _ci(ci) -> str:
    return "–" if ci is None else f"{ci[0]:+.1f} … {ci[1]:+.1f}"


def _paired_lines(card: dict) -> list[str]:
    paired = card["paired"]
    if not paired["runs"]:
        return []
    lines = ["", f"### Per task against {paired['base']} (speech, paired bootstrap, Δ in points)", "",
             "| task | " + " | ".join(paired["runs"]) + " |", "|---|" + "---|" * len(paired["runs"])]
    tasks = sorted({t for r in paired["runs"].values() for t in r["tasks"]})
    for t in tasks:
        cells = []
        for r in paired["runs"].values():
            v = r["tasks"].get(t)
            if v is None or not v["n"]:
                cells.append("–")
                continue
            mark = ""
            if v["flag"]:
                mark = " ⚠ worse, not trained on" if v["not_trained"] else " ⚠ worse"
            cells.append(f"{v['diff_pts']:+.1f} ({_ci(v['ci_pts'])}, n {v['n']}){mark}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(
        "–" if r["overall"]["diff_pts"] is None else
        f"{r['overall']['diff_pts']:+.1f} ({_ci(r['overall']['ci_pts'])}, n {r['overall']['n']})"
        for r in paired["runs"].values()) + " |")
    flags = card["flags"]
    lines += ["", f"flags: {len(flags)} task(s) worse than {paired['base']} (95 % CI below 0)"
              + ("" if not flags else ": " + "; ".join(
                  f"{f['run']} on {f['task']}" + (" (not trained on)" if f["not_trained"] else "") for f in flags))]
    return lines


def _reply_cell(reply) -> str:
    if reply is None:
        return "–"
    text = escape_cell(reply["output"]) if reply["output"].strip() else "*(empty)*"
    return text + (" *[cut off]*" if reply.get("stop") == "length" else "")


def _raw_lines(card: dict) -> list[str]:
    raw = card["raw_replies"]
    if not raw:
        return []
    names = list(card["columns"])
    lines = ["", f"### {len(raw)} raw replies (verbatim; rows spread over tasks, the same rows in every column)", "",
             "| # | task / split | instruction | label | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for k, r in enumerate(raw, 1):
        lines.append(f"| {k} | {r['task']} / {r['split'] or '–'} | {escape_cell(r['instruction'] or '–')} | "
                     f"{escape_cell('–' if r['label'] is None else r['label'])} | "
                     + " | ".join(_reply_cell(r["replies"].get(n)) for n in names) + " |")
    return lines
