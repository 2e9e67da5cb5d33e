"""Build an eval suite from held-out clips, and check that training never saw unseen templates.

The split mirrors DeSTA2 / Dynamic-SUPERB practice: each task is asked with `seen` phrasings
(the ones distillation trains on) and `unseen` ones, on clips that never appear in training, so
accuracy on unseen phrasings measures instruction generalisation and not memorisation.
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Literal

from speech_adapter.config import help_field
from speech_adapter.errors import ConfigError, DataError
from speech_adapter.eval.scoring import normalize
from speech_adapter.templates import TASKS, Template, applicable, mention_word, render, templates_for
from speech_adapter.utils.io import iter_jsonl

SPLITS = ("seen", "unseen")


@dataclasses.dataclass
class SuiteConfig:
    """How a suite is sampled from a corpus of held-out clips."""

    n_per_task: int = help_field(20, "rows per task and per split (seen, unseen); fewer if clips run out")
    seed: int = help_field(0, "sampling seed: the same corpus and seed give the same suite")
    tasks: list[str] | None = help_field(None, "tasks to include (default: every task a row supports)")
    constrained_fraction: float = help_field(0.5, "share of rows asked with a format-constrained template")
    on_training_clip: Literal["drop", "error"] = help_field("drop", "'drop' clips seen in training, or 'error' to refuse the corpus")
    json_fraction: float | None = help_field(
        None, "share of the constrained rows asked for JSON (None: JSON templates as often as any other rule)")
    bare_fraction: float = help_field(
        0.0, "share of plain option-task rows asked without their option list ('Is the speaker male or female?')")

    def validate(self):
        if self.n_per_task < 1:
            raise ConfigError(f"n_per_task: must be >= 1, got {self.n_per_task}")
        for key in ("constrained_fraction", "json_fraction", "bare_fraction"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key}: must be in [0, 1], got {value}")
        for t in self.tasks or []:
            if t not in TASKS:
                raise ConfigError(f"tasks: unknown task {t!r}; known: {', '.join(TASKS)}")


def resolve_audio(audio, base: Path | None) -> str | None:
    if not audio:
        return None
    p = Path(audio)
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.resolve())


def load_rows(path) -> list[dict]:
    """Rows of a corpus/described JSONL with `audio` made absolute (relative to the file's dir)."""
    path = Path(path)
    rows = []
    for row in iter_jsonl(path):
        row = dict(row)
        row["audio"] = resolve_audio(row.get("audio"), path.parent)
        rows.append(row)
    return rows


def training_keys(paths) -> tuple[set[str], set[str]]:
    """(clip ids, absolute audio paths) used in training, from id lists or distilled JSONL files.

    A `.txt` file holds one clip id a line; a JSONL contributes each row's `clip_id`, `source_id`,
    `id` and `audio`.
    """
    ids: set[str] = set()
    audio: set[str] = set()
    for path in paths or []:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: training list not found")
        if path.suffix == ".txt":
            ids.update(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
            continue
        for row in iter_jsonl(path):
            for key in ("clip_id", "source_id", "id"):
                if row.get(key) is not None:
                    ids.add(str(row[key]))
            a = resolve_audio(row.get("audio"), path.parent)
            if a:
                audio.add(a)
    return ids, audio


def build_suite(corpus: list[dict], config: SuiteConfig, train_ids=(), train_audio=()) -> tuple[list[dict], dict]:
    """Eval rows (docs/CONTRACTS.md) for every task, both splits, plus build stats.

    Clips whose id or audio path appears in training are dropped (or refused with `DataError`
    when `config.on_training_clip == "error"`).
    """
    train_ids, train_audio = set(map(str, train_ids)), set(train_audio)
    held, leaked = [], []
    for row in corpus:
        if str(row.get("id")) in train_ids or (row.get("audio") and row["audio"] in train_audio):
            leaked.append(str(row.get("id")))
        else:
            held.append(row)
    if leaked and config.on_training_clip == "error":
        raise DataError(f"{len(leaked)} eval clips appear in training (e.g. {leaked[:3]}); "
                        "hold them out or pass on_training_clip=drop")
    held.sort(key=lambda r: str(r.get("id")))
    tasks = config.tasks or list(TASKS)
    out, per_task = [], {}
    for task in tasks:
        eligible = [r for r in held if applicable(task, r)]
        for split in SPLITS:
            rng = random.Random(f"{config.seed}|{task}|{split}")
            plain = templates_for(task, split, "plain")
            constrained = templates_for(task, split, "constrained")
            clips = eligible[:]
            rng.shuffle(clips)
            for clip in clips[: config.n_per_task]:
                out.append(make_eval_row(clip, _pick_template(rng, config, plain, constrained)))
            per_task[f"{task}/{split}"] = min(len(clips), config.n_per_task)
    stats = {"clips": len(corpus), "held_out": len(held), "dropped_training_clips": len(leaked),
             "rows": len(out), "per_task": per_task}
    return out, stats


def _is_json(template: Template) -> bool:
    return any(dict(c).get("id") == "json" for c in template.constraints)


def _pick_template(rng: random.Random, config: SuiteConfig, plain: list, constrained: list) -> Template:
    """One row's template: constrained with `constrained_fraction` (JSON among them with
    `json_fraction` where set), else plain, asked bare with `bare_fraction` where it has a bare
    phrasing. The knobs at their defaults draw nothing extra: old suites stay as they were."""
    if constrained and rng.random() < config.constrained_fraction:
        pool = constrained
        if config.json_fraction is not None:
            js = [t for t in constrained if _is_json(t)]
            rest = [t for t in constrained if not _is_json(t)]
            if js and rest:
                pool = js if rng.random() < config.json_fraction else rest
        return rng.choice(pool)
    template = rng.choice(plain)
    if config.bare_fraction and template.bare and rng.random() < config.bare_fraction:
        return template.as_bare()
    return template


def make_eval_row(clip: dict, template: Template) -> dict:
    """One eval row: `clip` asked with `template` (label, options and metric from its task)."""
    task = TASKS[template.task]
    return {
        "id": f"{clip.get('id')}::{template.id}",
        "clip_id": clip.get("id"),
        "task": template.task,
        "audio": clip.get("audio"),
        "transcript": clip.get("transcript"),
        "asr_transcript": clip.get("asr_transcript"),
        "description": clip.get("description"),
        "meta": clip.get("meta") or {},
        "bins": clip.get("bins") or {},
        "instruction": render(template, clip),
        "template_id": template.id,
        "split": template.split,
        "kind": template.kind,
        "constraints": [dict(c) for c in template.constraints],
        "options": task.options(clip),
        "label": task.label(clip),
        "metric": task.metric,
        # the word a content question asks about: scoring reads "X was not said" as a no
        "focus": [mention_word(clip)[0]] if "{word}" in template.text else [],
    }


# ---------------------------------------------------------------- leak check


def _template_pattern(text: str) -> re.Pattern:
    parts = re.split(r"\{\w+\}", text)
    return re.compile(r".+?".join(re.escape(normalize(p)) for p in parts))


def find_unseen_leaks(items, training_rows) -> list[dict]:
    """Unseen templates (eval rows or `Template`s) whose id or text occurs in a training row."""
    train = [(str(r.get("id")), r.get("template_id"), normalize(r.get("instruction") or ""))
             for r in training_rows]
    train_tids = {tid: rid for rid, tid, _ in train if tid}
    leaks, done = [], set()
    for item in items:
        if isinstance(item, Template):
            split, tid, pattern = item.split, item.id, _template_pattern(item.text)
        else:
            split, tid = item.get("split"), item.get("template_id")
            pattern = re.compile(re.escape(normalize(item.get("instruction") or "")))
        if split != "unseen" or (tid, pattern.pattern) in done:
            continue
        done.add((tid, pattern.pattern))
        if tid and tid in train_tids:
            leaks.append({"template_id": tid, "training_row": train_tids[tid], "reason": "template id"})
            continue
        if not pattern.pattern:
            continue
        for rid, _, instr in train:
            if pattern.search(instr):
                leaks.append({"template_id": tid, "training_row": rid, "reason": "instruction text"})
                break
    return leaks


def check_unseen_leak(items, training_rows) -> None:
    """Raise `DataError` when any unseen template leaked into the training rows."""
    leaks = find_unseen_leaks(items, training_rows)
    if leaks:
        first = leaks[0]
        raise DataError(f"{len(leaks)} unseen templates occur in training rows (e.g. {first['template_id']} "
                        f"in row {first['training_row']} by {first['reason']}); the unseen split is not unseen")
