"""Kept fraction per task and template, attempts used, why answers failed: built from the
structured fields of the output rows (`teacher.attempts`) and of the reject rows
(`template_id`, `attempts`, `failed`), never from a reason's text."""

from __future__ import annotations

import collections
from pathlib import Path

from data_prep.rows import rejects_path
from speech_adapter.templates import Template, get_template
from speech_adapter.utils.io import iter_jsonl

STAGE = "distill"
STATS_NAME = "distill_stats.json"


class DistillStats:
    """Counters over distilled rows; `to_dict` is distill_stats.json."""

    def __init__(self):
        self.by_template = collections.defaultdict(lambda: [0, 0])
        self.by_task = collections.defaultdict(lambda: [0, 0])
        self.attempts = collections.Counter()
        self.reasons = collections.Counter()
        self.fallback = collections.Counter()  # kept rows answered with the label (label_fallback_tasks)
        self.kept = self.total = 0

    def add(self, template: Template, kept: bool, attempts: int, failed_kinds: list[str], fallback: bool = False):
        """One row: kept or not, the attempts a kept row took, the kinds its failures had, whether
        its answer is the label (every try wrong, `label_fallback_tasks`)."""
        self.total += 1
        self.fallback[template.task] += kept and fallback
        self.kept += kept
        for table, key in ((self.by_template, template.id), (self.by_task, template.task)):
            table[key][0] += 1
            table[key][1] += kept
        if kept:
            self.attempts[attempts] += 1
        self.reasons.update(failed_kinds)

    def to_dict(self, **extra) -> dict:
        def table(d):
            return {k: {"rows": n, "kept": k_, "kept_fraction": round(k_ / n, 3) if n else None}
                    for k, (n, k_) in sorted(d.items())}
        return {"rows": self.total, "kept": self.kept,
                "kept_fraction": round(self.kept / self.total, 3) if self.total else None,
                "per_task": table(self.by_task), "per_template": table(self.by_template),
                "kept_at_attempt": dict(sorted(self.attempts.items())),
                "failed_answer_reasons": dict(self.reasons.most_common()),
                "kept_by_label_fallback": {k: v for k, v in sorted(self.fallback.items()) if v}, **extra}


def stats_from_files(out_path: Path) -> DistillStats:
    """Stats over everything on disk (earlier runs included): kept rows and this stage's rejects.
    A reject row without `template_id` (written before rejects carried it) counts by its id's
    template, with no failure kinds."""
    stats = DistillStats()
    if out_path.exists():
        for r in iter_jsonl(out_path, strict=False):
            teacher = r.get("teacher") or {}
            stats.add(get_template(r["template_id"]), True, teacher.get("attempts", 1), [],
                      "label_fallback" in (teacher.get("sampling") or {}))
    rej = rejects_path(out_path)
    if rej.exists():
        for r in iter_jsonl(rej, strict=False):
            if r.get("stage") == STAGE and "/" in str(r.get("id", "")):
                template_id = r.get("template_id") or str(r["id"]).rsplit("/", 1)[1]
                stats.add(get_template(template_id), False, r.get("attempts", 0), r.get("failed", []))
    return stats


def format_table(stats: dict) -> str:
    """The per-task kept-fraction table printed at the end of a run."""
    lines = [f"{'task':<14}{'rows':>6}{'kept':>6}{'kept %':>8}"]
    for task, s in stats["per_task"].items():
        lines.append(f"{task:<14}{s['rows']:>6}{s['kept']:>6}{100 * s['kept_fraction']:>7.1f}%")
    frac = stats["kept_fraction"]
    lines.append(f"{'all':<14}{stats['rows']:>6}{stats['kept']:>6}"
                 + (f"{100 * frac:>7.1f}%" if frac is not None else "       -"))
    lines.append(f"kept at attempt: {stats['kept_at_attempt']}; this run: {stats['rows_this_run']} rows, "
                 f"{stats['rows_per_s']} rows/s; {stats['skipped']} were already done")
    return "\n".join(lines)
