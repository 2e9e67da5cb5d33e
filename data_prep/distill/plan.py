"""Which seen templates each clip is asked, and in what order the work runs (pure functions)."""

from __future__ import annotations

import random

from data_prep.distill.config import DistillConfig
from data_prep.teacher import stable_seed
from speech_adapter.templates import TASKS, Template, applicable, get_template, templates_for


def plan_clip(row: dict, cfg: DistillConfig) -> list[Template]:
    """The seen templates this clip is asked: describe family first, then the sampled pool."""
    rng = random.Random(stable_seed(cfg.seed, row["id"], "plan"))
    describe = templates_for("describe", split="seen", kind="plain")
    chosen = rng.sample(describe, min(cfg.describe_per_clip, len(describe)))
    names = cfg.tasks or [t for t in TASKS if t != "describe"]
    weights = cfg.task_weights or [1.0] * len(names)
    if cfg.nonspeech_task_weights and TASKS["speech"].label(row) == "no":
        weights = cfg.nonspeech_task_weights
    pool = [(t, w) for t, w in zip(names, weights) if w > 0 and applicable(t, row)]
    taken = {t.id for t in chosen}
    allowed = set(cfg.templates)
    restricted = {get_template(tid).task for tid in allowed}

    def open_templates(task: str, kind: str | None) -> list:
        return [t for t in templates_for(task, split="seen", kind=kind) if t.id not in taken
                and (task not in restricted or t.id in allowed)]

    picks = 0
    while picks < cfg.templates_per_clip and pool:
        task = rng.choices([t for t, _ in pool], [w for _, w in pool])[0]
        kind = "constrained" if rng.random() < cfg.constrained_fraction else "plain"
        options = open_templates(task, kind) or open_templates(task, None)
        if not options:  # this task's templates are used up for the clip: ask another task
            pool = [(t, w) for t, w in pool if t != task]
            continue
        pick = rng.choice(options)
        taken.add(pick.id)
        # the fraction's draw comes first and always, so adding bare_tasks leaves the other
        # tasks' choices as they were
        drawn = cfg.bare_fraction > 0 and pick.bare and rng.random() < cfg.bare_fraction
        if drawn or (pick.bare and pick.task in cfg.bare_tasks):
            pick = pick.as_bare()
        chosen.append(pick)
        picks += 1
    for t in chosen:  # the guarantee the eval relies on: unseen phrasings never reach training
        if t.split != "seen":
            raise AssertionError(f"template {t.id} is {t.split}; only seen templates may be distilled")
    return chosen


def is_choice(template: Template, cfg: DistillConfig) -> bool:
    """Whether this row's answer is the teacher's scored choice rather than a generated one."""
    return ((cfg.option_answers == "choice" or template.task in cfg.choice_tasks) and not template.constraints
            and TASKS[template.task].metric == "option")


def is_transcript_answer(template: Template, cfg: DistillConfig) -> bool:
    """Whether this row's answer is the clip's transcript (`transcript_answers`) rather than a
    generated one: plain transcription questions only."""
    return cfg.transcript_answers and template.task == "transcription" and not template.constraints


_ANSWER_LENGTH = {"option": 0, "number": 0, "word_overlap": 2, "wer": 2, "open": 3}


def batch_order(template: Template, cfg: DistillConfig) -> int:
    """Sort key that batches rows of like answer length together: a batch decodes until its
    longest answer ends, so one-word answers next to open descriptions would wait for them."""
    if is_choice(template, cfg) or is_transcript_answer(template, cfg):
        return -1
    return _ANSWER_LENGTH.get(TASKS[template.task].metric, 1) + (1 if template.constraints else 0)
