"""Selective self-rehearsal (SSR) over a batch of work items: the first answer that passes
`judge` is kept, greedy first, then seeded samples for the rows still failing.

Label-first answers (`option_answers: choice`): for a classification question the teacher does
not generate; it scores each option as a one-word reply ("Female.") with and without the clip's
description, and the option the description raises most is the answer (where SSR finds it wrong,
the option named by an accepted generated answer). A short adapter run learns an attribute from
such answers and from questions asked without their option list better than from "The speaker
is female." (benchmarks/NOTES.md, "Bare questions, label-first answers").
"""

from __future__ import annotations

import dataclasses

from data_prep.distill.config import DistillConfig
from data_prep.distill.judge import judge, reason_kind, trim_cut_off
from data_prep.distill.plan import is_choice, is_transcript_answer
from data_prep.teacher import Teacher, stable_seed
from speech_adapter.eval.scoring import parse_option, swap_to_label
from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, teacher_messages
from speech_adapter.templates import TASKS, Template


@dataclasses.dataclass
class WorkItem:
    """One (clip, template) row to distill, and what SSR found for it."""

    row: dict
    template: Template
    key: str  # output id: clip_id/template_id
    instruction: str
    answer: str | None = None  # the accepted target, None while (or if) every attempt failed
    reasons: list[str] = dataclasses.field(default_factory=list)  # one per failed attempt
    attempts: int = 0
    last_answer: str = ""
    sampling: dict = dataclasses.field(default_factory=dict)  # how the kept answer was decoded
    stamp: str | None = None  # what decided the answer, hashed (driver.row_stamp): a rerun redoes changed rows

    def reject_fields(self) -> dict:
        """The structured part of this item's reject row (what the stats count)."""
        distinct = list(dict.fromkeys(self.reasons))
        return {"template_id": self.template.id, "attempts": self.attempts,
                "kind": reason_kind(self.reasons[-1]), "failed": [reason_kind(r) for r in distinct]}

    def reject_reason(self) -> str:
        """The reject row's human-readable reason."""
        return (f"{self.template.id}: no acceptable answer in {self.attempts} attempts: "
                f"{'; '.join(dict.fromkeys(self.reasons))} (last: {self.last_answer[:80]!r})")


def messages(row: dict, instruction: str, cfg: DistillConfig) -> list[dict]:
    system = None if cfg.no_system_prompt else DEFAULT_SYSTEM_PROMPT
    return teacher_messages(row["description"], instruction, system, cfg.prompt_style)


# `choice_replies: sentence`: the statement a scored choice is answered with, per task; tasks not
# listed keep the one-word reply (a yes/no question's "Yes." is already a whole answer)
STATEMENTS = {"gender": "The speaker is {}.", "pitch": "The speaker's pitch is {}.",
              "speed": "The speaker talks at a {} pace.", "accent": "The speaker's accent is {}.",
              "language": "The speaker speaks {}."}


def reply_form(task: str, form: str = "word") -> str:
    """The form a scored choice of `task` takes under `choice_replies: form`: "sentence" only where
    the task has a statement."""
    return "sentence" if form == "sentence" and task in STATEMENTS else "word"


def choice_reply(option: str, task: str = "", form: str = "word") -> str:
    """The reply a scored choice gives: one word, "female" -> "Female." (label first), or with
    `form="sentence"` the task's statement, "The speaker is female.", where it has one."""
    if reply_form(task, form) == "sentence":
        return STATEMENTS[task].format(option)
    return option[:1].upper() + option[1:] + "."


def run_choices(items: list[WorkItem], teacher: Teacher, cfg: DistillConfig) -> list[WorkItem]:
    """`option_answers: choice`: the teacher scores every option as its whole reply ("Female.", or
    with `choice_replies: sentence` "The speaker is female.").
    A small LLM gives a one-word reply low likelihood whatever it read, with a prior for some
    options ("Male." over "Female."), so each option is scored by how much the clip's description
    raises it: log p(reply | description + instruction) - log p(reply | instruction alone)
    (domain-conditional PMI, Holtzman et al. 2021). The best option is the answer, checked like a
    generated one; deterministic, so one attempt."""
    if not items:
        return items
    replies = [[choice_reply(o, it.template.task, cfg.choice_replies) for o in TASKS[it.template.task].options(it.row)]
               for it in items]
    heard = teacher.score([messages(it.row, it.instruction, cfg) for it in items], replies)
    prior = teacher.score([messages({**it.row, "description": ""}, it.instruction, cfg) for it in items],
                          replies)
    for it, options, with_clip, without in zip(items, replies, heard, prior):
        gain = [a - b for a, b in zip(with_clip, without)]
        answer = options[max(range(len(options)), key=gain.__getitem__)]
        reason = judge(answer, it.template, it.row, cfg)
        it.answer, it.reasons, it.attempts = (None if reason else answer), ([reason] if reason else []), 1
        it.last_answer = answer
        it.sampling = {"choice": dict(zip(options, (round(g, 3) for g in gain)))}
    return items


def run_transcripts(items: list[WorkItem], cfg: DistillConfig) -> list[WorkItem]:
    """`transcript_answers`: a plain transcription question's answer is the clip's transcript, the
    words the teacher's description quotes (checked like a generated answer, so a row without a
    transcript is rejected); no teacher call, one attempt."""
    for it in items:
        answer = str(it.row.get("transcript") or "").strip()
        reason = judge(answer, it.template, it.row, cfg)
        it.answer, it.reasons, it.attempts = (None if reason else answer), ([reason] if reason else []), 1
        it.last_answer, it.sampling = answer, {"transcript": True}
    return items


def run_batch(items: list[WorkItem], teacher: Teacher, cfg: DistillConfig) -> list[WorkItem]:
    """SSR for a batch: one round per attempt, greedy first, then seeded samples for the items
    still failing; fills each item's answer/reasons/attempts/sampling.

    Plain transcription items under `transcript_answers` take the transcript (`run_transcripts`).
    Items answered by choice are scored first (`run_choices`); where the scored choice is wrong,
    the teacher's generated answers get the usual attempts, and the option an accepted answer
    names becomes the one-word reply (so SSR keeps as many rows as with free answers, in
    label-first form); for `label_fallback_tasks`, a row whose every try was wrong takes the
    clip's label in that form, or where the task is answered free (gender), the teacher's last
    answer with the wrong option's words swapped for the label's (`swap_to_label`), if that passes
    the judge: a phrasing the teacher misreads for one gender no longer keeps the other's rows only."""
    run_transcripts([it for it in items if is_transcript_answer(it.template, cfg)], cfg)
    chosen = run_choices([it for it in items if is_choice(it.template, cfg)], teacher, cfg)
    pending = [it for it in items if not is_choice(it.template, cfg) and not is_transcript_answer(it.template, cfg)]
    pending += [it for it in chosen if it.answer is None]  # their scored choice was attempt 1
    for attempt in range(cfg.attempts):
        if not pending:
            break
        sampling = cfg.sampling(do_sample=attempt > 0)
        prompts = [messages(it.row, it.instruction, cfg) for it in pending]
        seeds = [stable_seed(it.key, attempt) for it in pending]
        answers = teacher.generate(prompts, n=1, sampling=sampling, seeds=seeds)
        still = []
        for it, (answer,) in zip(pending, answers):
            answer = trim_cut_off(answer)
            it.attempts += 1
            reason = judge(answer, it.template, it.row, cfg)
            if reason is None:
                it.answer, record = answer, sampling.record()
                if is_choice(it.template, cfg):  # the option the accepted answer names, label first
                    named = parse_option(answer, TASKS[it.template.task].options(it.row))
                    it.answer = choice_reply(named, it.template.task, cfg.choice_replies)
                    record = {**it.sampling, "generated": answer, **record}
                it.sampling = record
            else:
                it.reasons.append(reason)
                it.last_answer = answer
                still.append(it)
        pending = still
    for it in pending:  # label_fallback_tasks: every try was wrong; the label in the choice's form,
        # or for a generated answer, the teacher's last words with the option they name swapped
        task = it.template.task
        label = TASKS[task].label(it.row) if task in cfg.label_fallback_tasks else None
        if not label:
            continue
        choice = is_choice(it.template, cfg)
        if choice:
            answer = choice_reply(label, task, cfg.choice_replies)
        else:
            answer = swap_to_label(it.last_answer, task, label, keep=str(it.row.get("transcript") or ""))
        if answer is not None and judge(answer, it.template, it.row, cfg) is None:
            it.answer, it.sampling = answer, {**it.sampling, "label_fallback": [reason_kind(r) for r in it.reasons]}
            if not choice:
                it.sampling["swapped"] = it.last_answer
    return items
