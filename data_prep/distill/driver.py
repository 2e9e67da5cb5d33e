"""`distill()`: plan every clip, run SSR batch by batch, append kept rows and rejects durably,
write distill_stats.json. Resumable: a rerun skips keys already in the output or rejected at
this stage; sampling is seeded per row, so a resumed run writes what an uninterrupted one would.

Each row records a stamp of what decided its answer (the teacher's prompt, whether it is a scored
choice, the teacher and SSR settings). A rerun with other settings (a changed description,
`choice_tasks`, teacher, `max_wer` ...) distills the rows whose stamp changed again, and drops the
rows the plan no longer asks for, instead of training on stale answers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from data_prep.distill.config import DistillConfig
from data_prep.distill.plan import batch_order, is_choice, is_transcript_answer, plan_clip
from data_prep.distill.ssr import WorkItem, messages, reply_form, run_batch
from data_prep.distill.stats import STAGE, STATS_NAME, DistillStats, stats_from_files
from data_prep.rows import RejectLog, read_repaired, rejects_path
from data_prep.teacher import Teacher
from data_prep.teachers import load_teacher
from speech_adapter.errors import DataError
from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT
from speech_adapter.templates import TASKS, render
from speech_adapter.utils.io import JsonlAppender, read_jsonl, write_json_atomic, write_jsonl_atomic

# settings that do not change a row's answer: where files go, batching, the progress bar, and the
# plan's knobs, whose effect on a row (its key, instruction, scored or generated) the stamp holds
_NOT_IN_STAMP = {"input", "output", "limit", "batch_size", "quiet", "balance_tasks", "tasks", "task_weights",
                 "nonspeech_task_weights",
                 "templates", "describe_per_clip", "templates_per_clip", "constrained_fraction", "bare_fraction",
                 "bare_tasks", "option_answers", "choice_tasks", "choice_replies",
                 "transcript_answers", "label_fallback_tasks"}


def answer_settings(cfg: DistillConfig) -> dict:
    """The settings every row's answer depends on: teacher, decoding, SSR thresholds, seed."""
    return {k: v for k, v in sorted(dataclasses.asdict(cfg).items()) if k not in _NOT_IN_STAMP}


def row_stamp(item: WorkItem, cfg: DistillConfig, settings: dict | None = None) -> str:
    """What decided this row's answer, hashed: the teacher's messages (description, instruction,
    system prompt), whether the answer is a scored choice (and in which form), the row's labels SSR
    checks it against, and `answer_settings`."""
    choice = is_choice(item.template, cfg)
    if choice and reply_form(item.template.task, cfg.choice_replies) != "word":
        choice = "sentence"  # the reply form, on the rows it shapes (one-word rows keep True)
    if item.template.task in cfg.label_fallback_tasks:  # a wrong answer is replaced, not dropped
        choice = f"{choice}, label fallback" if choice else "label fallback (swapped words)"
    if is_transcript_answer(item.template, cfg):
        choice = "transcript"  # answered with the transcript, not generated
    facts = {"messages": messages(item.row, item.instruction, cfg), "choice": choice,
             "transcript": item.row.get("transcript"), "meta": item.row.get("meta"),
             "settings": answer_settings(cfg) if settings is None else settings}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_all(rows: list[dict], cfg: DistillConfig, src: Path) -> list[WorkItem]:
    """Every (clip, template) row the config asks for, each with its stamp."""
    items, settings = [], answer_settings(cfg)
    for row in rows[: cfg.limit or None]:
        if not row.get("description"):
            raise DataError(f"{src}: row {row.get('id')!r} has no 'description'; run `data describe` first")
        for template in plan_clip(row, cfg):
            item = WorkItem(row, template, f"{row['id']}/{template.id}", render(template, row))
            item.stamp = row_stamp(item, cfg, settings)
            items.append(item)
    return items


def _stamp_of(row: dict) -> str | None:
    """The stamp a kept row (`teacher.settings`) or a reject (`settings`) was written with."""
    return (row.get("teacher") or {}).get("settings") or row.get("settings")


def _task_of(template_id: str) -> str:
    return template_id.split(".", 1)[0]


def settle_done(out_path: Path, planned: list[WorkItem], cfg: DistillConfig) -> tuple[set[str], int, int]:
    """The keys already answered under the current settings, after removing from the output and
    from this stage's rejects every row that is stale: its stamp differs from the plan's, the plan
    (of the clips it covers) no longer asks for it, or it was dropped by a label balance the config
    no longer asks for (or that must be redone because rows of its task are answered again).
    Rows written before stamps existed count as done. Returns (done keys, rows removed, done rows
    without a stamp)."""
    stamps = {it.key: it.stamp for it in planned}
    clips = {it.row["id"] for it in planned}
    rej_path = rejects_path(out_path)
    kept_rows = read_repaired(out_path)
    rejects = read_repaired(rej_path)

    def stale(key: str, stamp: str | None) -> bool:
        if key.split("/", 1)[0] not in clips:
            return False  # a clip beyond `limit`: not this run's business
        return key not in stamps or (stamp is not None and stamp != stamps[key])

    out_keep = [r for r in kept_rows if not stale(str(r.get("id")), _stamp_of(r))]
    ours = [r for r in rejects if r.get("stage") == STAGE]
    rej_keep = [r for r in ours if r.get("kind") == "balance" or not stale(str(r.get("id")), _stamp_of(r))]
    done = {str(r["id"]) for r in out_keep} | {str(r["id"]) for r in rej_keep if r.get("kind") != "balance"}
    balanced = {str(r["id"]) for r in rej_keep if r.get("kind") == "balance"
                and _task_of(str(r.get("template_id", ""))) in cfg.balance_tasks and not stale(str(r.get("id")), None)}
    redo_tasks = {_task_of(it.template.id) for it in planned if it.key not in done | balanced}
    balance_keep = [r for r in rej_keep if r.get("kind") != "balance"
                    or (str(r["id"]) in balanced and _task_of(str(r.get("template_id", ""))) not in redo_tasks)]
    done |= {str(r["id"]) for r in balance_keep if r.get("kind") == "balance"}
    removed = (len(kept_rows) - len(out_keep)) + (len(ours) - len(balance_keep))
    unstamped = sum(str(r.get("id")) in stamps and not _stamp_of(r)
                    for r in out_keep + [r for r in balance_keep if r.get("kind") != "balance"])
    if len(out_keep) != len(kept_rows):
        write_jsonl_atomic(out_path, out_keep)
    if len(balance_keep) != len(ours):
        write_jsonl_atomic(rej_path, [r for r in rejects if r.get("stage") != STAGE] + balance_keep)
    return done, removed, unstamped


def distill(rows: list[dict], cfg: DistillConfig, teacher: Teacher | None = None,
            input_path: str | None = None) -> dict:
    """Distill `rows` (described rows) into `cfg.output`; returns the stats dict (also saved)."""
    out_path = Path(cfg.output)
    src = Path(input_path or cfg.input)
    planned = plan_all(rows, cfg, src)
    done, removed, unstamped = settle_done(out_path, planned, cfg)
    if removed and not cfg.quiet:
        print(f"distill: {removed} rows were answered under other settings or are no longer planned; "
              "they are distilled again or dropped", flush=True)
    if unstamped:  # printed even when quiet: a changed recipe may be training on stale answers
        print(f"distill: {unstamped} rows of {out_path} were written by a version without row stamps and are "
              "kept as they are: a changed teacher, description or answer setting does not redo them. "
              f"Delete {out_path} and {rejects_path(out_path)} to distill everything again.",
              file=sys.stderr, flush=True)
    work = sorted((it for it in planned if it.key not in done), key=lambda it: batch_order(it.template, cfg))
    skipped = len(planned) - len(work)
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
                                fields={**fields, "settings": it.stamp})
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
                        "attempts": it.attempts, "prompt_style": cfg.prompt_style, "settings": it.stamp}}


def _relocate_audio(row: dict, src: Path, dst: Path) -> dict:
    """Keep a relative audio path valid when the output JSONL lives in another directory."""
    audio = row.get("audio")
    if not audio or Path(str(audio)).is_absolute():
        return row
    full = (src.parent / str(audio)).resolve()
    return {**row, "audio": os.path.relpath(full, dst.parent.resolve())}
