"""`distill()`: plan every clip, run SSR batch by batch, append kept rows and rejects durably,
write distill_stats.json. Resumable: a rerun skips keys already in the output or rejected at
this stage; sampling is seeded per row, so a resumed run writes what an uninterrupted one would."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

from tqdm import tqdm

from data_prep.distill.config import DistillConfig
from data_prep.distill.plan import batch_order, plan_clip
from data_prep.distill.ssr import WorkItem, run_batch
from data_prep.distill.stats import STAGE, STATS_NAME, DistillStats, stats_from_files
from data_prep.rows import RejectLog, done_ids
from data_prep.teacher import Teacher
from data_prep.teachers import load_teacher
from speech_adapter.errors import DataError
from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT
from speech_adapter.templates import TASKS, render
from speech_adapter.utils.io import JsonlAppender, read_jsonl, write_json_atomic, write_jsonl_atomic


def plan_work(rows: list[dict], cfg: DistillConfig, src: Path, done: set[str]) -> tuple[list[WorkItem], int]:
    """The work items not yet done, in batch order, and how many were skipped as done."""
    work, skipped = [], 0
    for row in rows[: cfg.limit or None]:
        if not row.get("description"):
            raise DataError(f"{src}: row {row.get('id')!r} has no 'description'; run `data describe` first")
        for template in plan_clip(row, cfg):
            key = f"{row['id']}/{template.id}"
            if key in done:
                skipped += 1
                continue
            work.append(WorkItem(row, template, key, render(template, row)))
    work.sort(key=lambda it: batch_order(it.template, cfg))  # stable, so deterministic
    return work, skipped


def distill(rows: list[dict], cfg: DistillConfig, teacher: Teacher | None = None,
            input_path: str | None = None) -> dict:
    """Distill `rows` (described rows) into `cfg.output`; returns the stats dict (also saved)."""
    out_path = Path(cfg.output)
    src = Path(input_path or cfg.input)
    work, skipped = plan_work(rows, cfg, src, done_ids(out_path, STAGE))
    teacher = teacher or load_teacher(cfg.teacher_config())
    run = DistillStats()
    start = time.time()
    with JsonlAppender(out_path) as out, RejectLog(out_path, STAGE) as rejects, \
            tqdm(total=len(work), unit="row", disable=cfg.quiet, desc="distill") as bar:
        for i in range(0, len(work), cfg.batch_size):
            for it in run_batch(work[i:i + cfg.batch_size], teacher, cfg):
                run.add(it.template, it.answer is not None, it.attempts, [])
                if it.answer is None:
                    fields = it.reject_fields()
                    rejects.add(it.reject_reason(), id=it.key, source=str(src), kind=fields.pop("kind"),
                                fields=fields)
                else:
                    out.write(output_row(it, teacher, cfg, src, out_path))
            bar.update(min(cfg.batch_size, len(work) - i))
            bar.set_postfix(kept=f"{run.kept}/{run.total}")
    if cfg.balance_tasks:  # every row is done now: a resumed run balances what an uninterrupted one would
        balance_labels(out_path, cfg.balance_tasks, src)
    elapsed = time.time() - start
    result = stats_from_files(out_path).to_dict(
        skipped=skipped, elapsed_s=round(elapsed, 1), rows_this_run=run.total, config=dataclasses.asdict(cfg),
        teacher=getattr(teacher, "model_id", "?"))
    result["rows_per_s"] = round(run.total / elapsed, 3) if elapsed > 0 and run.total else None
    write_json_atomic(out_path.parent / STATS_NAME, result)
    return result


def balance_labels(out_path: Path, tasks: list[str], src: Path) -> int:
    """Per template of `tasks`, keep as many rows of each option as of its rarest, the rest going
    to rejects.jsonl (kind "balance"); returns how many were dropped.

    SSR keeps only the answers it can check, so a phrasing the teacher misreads for women keeps
    only men's rows, and the student learns the phrasing, not the voice. Which rows stay is fixed
    by a hash of their ids, so the result does not depend on the order rows were written in."""
    rows = read_jsonl(out_path)
    groups: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        if r.get("task") in tasks and r.get("label") is not None:
            options = TASKS[r["task"]].options(r) or []
            by_label = groups.setdefault(r["template_id"], {str(o): [] for o in options})
            by_label.setdefault(str(r["label"]), []).append(r)
    drop: dict[str, str] = {}
    for template_id, by_label in groups.items():
        cap = min(len(v) for v in by_label.values())
        counts = ", ".join(f"{len(v)} {label}" for label, v in sorted(by_label.items()))
        for label, members in by_label.items():
            for r in sorted(members, key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())[cap:]:
                drop[r["id"]] = f"label balance: {template_id} kept {counts}; {cap} of each stay"
    if drop:
        with RejectLog(out_path, STAGE) as rejects:
            for r in rows:
                if r["id"] in drop:
                    rejects.add(drop[r["id"]], id=r["id"], source=str(src), kind="balance",
                                fields={"template_id": r["template_id"], "attempts": 0, "failed": ["balance"]})
        write_jsonl_atomic(out_path, [r for r in rows if r["id"] not in drop])
    return len(drop)


def output_row(it: WorkItem, teacher: Teacher, cfg: DistillConfig, src: Path, dst: Path) -> dict:
    """The distilled row: the clip's row, the instruction, the kept answer and how it was made."""
    t, row = it.template, _relocate_audio(it.row, src, dst)
    # the ground truth, where the metadata knows it: task_sft (the naive baseline) trains on it
    label = TASKS[t.task].label(row) if t.task in TASKS else None
    return {**row, "id": it.key, "clip_id": row["id"], "instruction": it.instruction,
            "template_id": t.id, "task": t.task, "split": t.split, "response": it.answer,
            "label": None if label is None else str(label),
            "constraints": [dict(c) for c in t.constraints],
            "system": None if cfg.no_system_prompt else DEFAULT_SYSTEM_PROMPT,
            "teacher": {"model": getattr(teacher, "model_id", "?"), "sampling": it.sampling,
                        "attempts": it.attempts, "prompt_style": cfg.prompt_style}}


def _relocate_audio(row: dict, src: Path, dst: Path) -> dict:
    """Keep a relative audio path valid when the output JSONL lives in another directory."""
    audio = row.get("audio")
    if not audio or Path(str(audio)).is_absolute():
        return row
    full = (src.parent / str(audio)).resolve()
    return {**row, "audio": os.path.relpath(full, dst.parent.resolve())}
