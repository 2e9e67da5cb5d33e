"""`data distill`: self-distillation targets with selective self-rehearsal (SSR) filtering.

DeSTA2 / DeSTA2.5-Audio: the frozen backbone LLM reads each clip's seed description plus an
instruction and its own answer becomes the speech model's target, so the adapter only has to
make the LLM "hear" what the text told it. Per clip we ask the "What can you hear?" family and
a few instructions sampled from the shared template pool (`speech_adapter.templates`, `seen`
split only: `unseen` phrasings are kept out of training to measure generalisation).

Selective self-rehearsal (the lecture notes' self-output filtering): where an answer can be
checked — an attribute whose true value the metadata knows (mapped with
`eval.scoring.parse_option`), a count, the transcript's words, an IFEval-style format
constraint (`eval.constraints`) — the first answer is greedy and up to k-1 seeded samples
follow; the first answer that passes is kept, otherwise the row is rejected with the reason.
Every answer must also be non-degenerate (not empty, no repetition loop, not too long or cut off
mid-sentence), must not talk about its input ("the description says", "[00:00") and must not
contradict the metadata ("a man" for a female speaker, "high-pitched" for a voice binned low).
Open rows (the describe family) must be about the clip: its words, or its speaker's true gender
or accent.

Label-first answers (`option_answers: choice`, off by default): for a classification question
the teacher does not generate; it scores each option as a one-word reply ("Female.") with and
without the clip's description, and the option the description raises most is the answer (where
SSR finds it wrong, the option named by an accepted generated answer). A ~100-step adapter learns
an attribute from such answers and from questions asked without their option list
(`bare_fraction`), not from "The speaker is female." after a listed-options question
(benchmarks/NOTES.md, sessions 3-4). It is still the teacher's choice, but no longer its phrasing.

Resumable: output rows have `id` = `clip_id/template_id` (the clip's own id is `clip_id`),
appended durably; a rerun skips keys already in the output or rejected at this stage. Sampling is seeded per row, so a resumed run writes what
an uninterrupted one would.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import os
import random
import re
import time
from pathlib import Path
from typing import Literal

from data_prep import nonspeech
from data_prep.teacher import Backend, Sampling, Teacher, TeacherConfig, load_teacher, stable_seed
from speech_adapter.config import help_field
from speech_adapter.errors import ConfigError, DataError
from speech_adapter.paths import OFFLINE_LLM

STAGE = "distill"
STATS_NAME = "distill_stats.json"

# An answer that talks about its text input instead of the audio. Checked outside the transcript.
LEAK_PATTERNS = [
    r"\bdescription\b", r"\b(the|this|given|provided) (text|passage|input|information|metadata)\b",
    r"\btext (says|states|mentions|describes)\b", r"\bbased on the (text|information|details)\b",
    r"\bmetadata\b", r"\[\s*\d\d:\d\d", r"\((gender|pitch|accent):", r"\bspeaking speed:",
    r"\bas an ai\b", r"\b(cannot|can't|can not|unable to|don't have the ability to) (hear|listen)",
    r"\bno audio\b", r"\[audio\]",
]
_LEAK = re.compile("|".join(LEAK_PATTERNS), re.IGNORECASE)
# Directional attribute claims checked against `bins` (a "high-pitched" voice binned "Low" is wrong).
_LEVEL_PATTERNS = {
    "pitch": r"\b(high|low)[- ]pitch",
    "speed": r"\b(fast|quick|rapid|slow)(?:ly)?[- ]?(?:paced|speaking|speech|talking|pace|delivery|speed)",
    "volume": r"\b(?:(loud|quiet|soft)(?:ly|er)?\b|(high|low)(?= volume))",
}
_HIGH = {"high", "very high", "fast", "very fast"}
_LOW = {"low", "very low", "slow", "very slow"}
_GENDER_WORDS = {
    "female": {"male", "man", "men", "masculine", "gentleman", "boy", "he", "his", "him"},
    "male": {"female", "woman", "women", "feminine", "lady", "girl", "she", "her", "hers"},
}


@dataclasses.dataclass
class DistillConfig:
    """`data distill`: teacher answers to (description + instruction), filtered by SSR."""

    input: str = help_field("", "described JSONL (corpus rows + description)")
    output: str = help_field("", "distilled JSONL; rejects.jsonl and distill_stats.json go beside it")
    # what to ask
    describe_per_clip: int = help_field(1, "instructions per clip from the 'What can you hear?' family")
    templates_per_clip: int = help_field(3, "further instructions per clip from the task pool")
    tasks: list[str] = help_field(default_factory=list,
                                  help="pool tasks to sample from (empty = every task the row supports)")
    task_weights: list[float] = help_field(default_factory=list,
                                           help="sampling weight per entry of `tasks` (empty = equal)")
    templates: list[str] = help_field(
        default_factory=list, help="only these seen template ids for the pool tasks, e.g. [gender.01] "
        "(empty = every seen template); a short run learns faster from one phrasing per task")
    constrained_fraction: float = help_field(0.4, "chance a pool instruction is format-constrained")
    bare_fraction: float = help_field(
        0.0, "chance a plain classification question is asked without its option list "
        "('What is the gender of the speaker?', id <template>:bare); the eval always lists them")
    option_answers: Literal["free", "choice"] = help_field(
        "free", "classification answers: free (the teacher's generated answer) | choice (the option "
        "the clip's description makes likeliest in the teacher's scoring, as a one-word reply "
        "'Female.': label first; where that choice is wrong, the option its accepted generated "
        "answer names)")
    seed: int = help_field(0, "seed of template choice and of the sampled retries")
    limit: int = help_field(0, "distill at most this many clips (0 = all)")
    # SSR
    attempts: int = help_field(4, "k: answers tried per checkable row (1 greedy + k-1 samples)")
    max_words: int = help_field(120, "reject answers longer than this (truncated or rambling)")
    min_overlap: float = help_field(0.6, "content_qa: share of transcript words the answer must hold")
    max_wer: float = help_field(0.2, "transcription: highest WER against the transcript")
    open_min_grounding: float = help_field(
        0.3, "open rows (describe): share of transcript words to mention, unless the answer names the speaker's gender")
    allow_contradictions: bool = help_field(False, "keep answers naming the wrong gender/accent")
    # teacher
    model: str = help_field(OFFLINE_LLM,
                            "teacher LLM: offline:NAME, model dir, .gguf file (fake:SCRIPT.json in tests)")
    backend: Backend = help_field("transformers", "transformers | ctranslate2 (fast on CPU) | vllm (GPU)")
    dtype: str = help_field("float32", "teacher dtype (fp32 is fastest on CPU)")
    batch_size: int = help_field(8, "prompts per teacher generate call")
    max_new_tokens: int = help_field(160, "longest teacher answer in tokens")
    temperature: float = help_field(0.7, "temperature of the sampled retries")
    top_p: float = help_field(0.9, "top-p of the sampled retries")
    prompt_style: Literal["listener", "naive"] = help_field("listener", "teacher prompt: listener (rewritten seed) | naive (raw seed)")
    no_system_prompt: bool = help_field(False, "omit prompts.DEFAULT_SYSTEM_PROMPT (the model's default applies)")
    quiet: bool = help_field(False, "no progress bar")

    def validate(self):
        from speech_adapter.templates import TASKS, TEMPLATES

        if not self.input or not self.output:
            raise ConfigError("input and output: both are required")
        for name in ("describe_per_clip", "templates_per_clip", "limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0")
        if self.attempts < 1:
            raise ConfigError("attempts: must be >= 1")
        if not 0.0 <= self.constrained_fraction <= 1.0:
            raise ConfigError("constrained_fraction: must be in [0, 1]")
        for t in self.tasks:
            if t not in TASKS:
                raise ConfigError(f"tasks: unknown task {t!r}" + _did_you_mean(t, TASKS))
        if self.task_weights and len(self.task_weights) != len(self.tasks):
            raise ConfigError("task_weights: give one weight per entry of tasks")
        by_id = {t.id: t for t in TEMPLATES}
        for tid in self.templates:
            if tid not in by_id:
                raise ConfigError(f"templates: unknown template {tid!r}" + _did_you_mean(tid, by_id))
            t = by_id[tid]
            if t.split != "seen":
                raise ConfigError(f"templates: {tid} is an unseen (eval-only) template")
            if self.tasks and t.task not in self.tasks:
                raise ConfigError(f"templates: {tid} is a {t.task} template, not one of tasks {self.tasks}")
        if not 0.0 <= self.bare_fraction <= 1.0:
            raise ConfigError("bare_fraction: must be in [0, 1]")
        if self.option_answers == "choice" and self.backend == "vllm":
            raise ConfigError("option_answers: 'choice' scores replies with the transformers or ctranslate2 backend only")
        TeacherConfig(self.model, self.backend, self.dtype, self.batch_size).validate()

    def teacher_config(self) -> TeacherConfig:
        return TeacherConfig(self.model, self.backend, self.dtype, self.batch_size)

    def sampling(self, do_sample: bool) -> Sampling:
        return Sampling(do_sample, self.temperature, self.top_p, self.max_new_tokens, self.seed)


def _did_you_mean(value: str, choices) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------- which instructions per clip


def plan_clip(row: dict, cfg: DistillConfig) -> list:
    """The seen templates this clip is asked: describe family first, then the sampled pool."""
    from speech_adapter.templates import TASKS, applicable, get_template, templates_for

    rng = random.Random(stable_seed(cfg.seed, row["id"], "plan"))
    describe = templates_for("describe", split="seen", kind="plain")
    chosen = rng.sample(describe, min(cfg.describe_per_clip, len(describe)))
    names = cfg.tasks or [t for t in TASKS if t != "describe"]
    weights = cfg.task_weights or [1.0] * len(names)
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
        if cfg.bare_fraction > 0 and pick.bare and rng.random() < cfg.bare_fraction:
            pick = pick.as_bare()
        chosen.append(pick)
        picks += 1
    for t in chosen:  # the guarantee the eval relies on: unseen phrasings never reach training
        if t.split != "seen":
            raise AssertionError(f"template {t.id} is {t.split}; only seen templates may be distilled")
    return chosen


# ---------------------------------------------------------------- judging one answer


def trim_cut_off(answer: str, min_words: int = 20) -> str:
    """An answer cut off by max_new_tokens, trimmed back to its last complete sentence; other
    answers unchanged. A long answer with no sentence end at all stays as is (and is rejected)."""
    text = (answer or "").strip()
    if len(re.findall(r"\w+", text)) < min_words or text[-1] in ".!?\"')]`*:;":
        return text
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", text)]
    return text[: ends[-1]].strip() if ends else text


def degenerate_reason(answer: str, max_words: int, transcript: str | None = None,
                      check_leaks: bool = True) -> str | None:
    """Why an answer is unusable as a target whatever the question, or None.

    `check_leaks`: also reject talk about a text input ("the description says"), for audio rows."""
    text = (answer or "").strip()
    words = re.findall(r"\w+", text.lower())
    if not words:
        return "empty answer"
    if len(words) > max_words:
        return f"too long ({len(words)} words > {max_words})"
    if len(words) >= 20 and text[-1] not in ".!?\"')]`*:;":
        return "cut off mid-sentence (no final punctuation)"
    if re.search(r"\b(\w+)(?:\W+\1\b){3,}", text.lower()):
        return "repetition loop (a word repeated 4+ times in a row)"
    if len(words) >= 12:
        grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        if len(set(grams)) / len(grams) < 0.6:
            return "repetition loop (repeated phrases)"
    if not check_leaks:
        return None
    outside = text
    if transcript:
        outside = re.sub(re.escape(transcript.strip()), " ", outside, flags=re.IGNORECASE)
    m = _LEAK.search(outside)
    if m:
        return f"talks about its text input ({m.group(0)!r})"
    return None


def contradiction_reason(answer: str, row: dict) -> str | None:
    """An attribute the answer states that the metadata contradicts (gender, accent), or None."""
    from speech_adapter.templates import ACCENTS

    meta = row.get("meta") or {}
    if meta.get("speech") is not None:  # a speaker in a clip without speech, or "no speech" in one with it
        reason = (nonspeech.speaker_claim_reason(answer) if meta["speech"] is False
                  else nonspeech.speech_denial_reason(answer, row.get("transcript")))
        if reason or meta["speech"] is False:
            return reason
    spoken = set(re.findall(r"[a-z]+", (row.get("transcript") or "").lower()))
    words = set(re.findall(r"[a-z]+", answer.lower())) - spoken  # "man's" -> man, s
    gender = str(meta.get("gender") or "").lower()
    wrong = sorted(words & _GENDER_WORDS.get(gender, set()))
    if wrong:
        return f"contradicts gender {gender} ({', '.join(wrong)})"
    bins = {k: str(v).lower() for k, v in (row.get("bins") or {}).items() if v}
    for name, pattern in _LEVEL_PATTERNS.items():
        true = bins.get(name, "")
        side = "high" if true in _HIGH else "low" if true in _LOW else None
        for m in re.finditer(pattern, answer.lower()):
            word = next(g for g in m.groups() if g)
            said = "high" if word in ("high", "fast", "quick", "rapid", "loud") else "low"
            if side and said != side:
                return f"contradicts {name} {true} ({m.group(0)!r})"
    accent = meta.get("accent")
    if accent:
        low = answer.lower()
        for other in ACCENTS:
            if other.lower() in low and other.lower() not in accent.lower() and accent.lower() not in other.lower():
                return f"contradicts accent {accent} ({other})"
    return None


def _ungrounded_reason(answer: str, row: dict, min_overlap: float) -> str | None:
    """An open answer must be about this clip: its words, or its speaker's true gender or accent
    ("I'm ready to help" is not)."""
    from speech_adapter.eval.scoring import word_overlap

    if (row.get("meta") or {}).get("speech") is False:  # no words or speaker: it must say what it heard
        return nonspeech.grounding_reason(answer, row["meta"])
    transcript = row.get("transcript") or ""
    if transcript and word_overlap(answer, transcript) >= min_overlap:
        return None
    meta = row.get("meta") or {}
    gender = str(meta.get("gender") or "").lower()
    own = {"female": _GENDER_WORDS["male"], "male": _GENDER_WORDS["female"]}.get(gender, set())
    spoken = set(re.findall(r"[a-z]+", transcript.lower()))
    if (set(re.findall(r"[a-z]+", answer.lower())) - spoken) & own:
        return None
    if meta.get("accent") and str(meta["accent"]).lower() in answer.lower():
        return None
    return "not about the clip (neither its words nor its speaker's gender or accent)"


def judge(answer: str, template, row: dict, cfg: DistillConfig) -> str | None:
    """None when `answer` is a good target for (template, row), else the reason it is not."""
    from speech_adapter.eval.constraints import check_all
    from speech_adapter.templates import TASKS

    reason = degenerate_reason(answer, cfg.max_words, row.get("transcript"))
    if reason:
        return reason
    failed = [k for k, ok in check_all(list(template.constraints), answer).items() if not ok]
    if failed:
        return f"constraint failed: {', '.join(failed)}"
    task = TASKS[template.task]
    label = task.label(row)
    reason = _label_reason(answer, template.task, task, label, row, cfg)
    if reason is None and not cfg.allow_contradictions:
        reason = contradiction_reason(answer, row)
    return reason


def _label_reason(answer, name, task, label, row, cfg) -> str | None:
    """Why the answer disagrees with what the metadata knows, or None (also when unknowable)."""
    from speech_adapter.eval.scoring import extract_answer, parse_number, parse_option, wer, word_overlap

    if task.metric == "open":
        return _ungrounded_reason(answer, row, cfg.open_min_grounding)
    if label is None:
        return None
    if task.metric == "option":
        options = task.options(row)
        picked = parse_option(answer, options)
        if picked is None:
            return f"no single option in the answer (options: {', '.join(options)})"
        if picked.lower() != str(label).lower():
            return f"wrong {name}: answered {picked!r}, true {label!r}"
    elif task.metric == "number":
        got = parse_number(answer)
        if got != int(label):
            return f"wrong {name}: answered {got}, true {label}"
    elif task.metric == "word_overlap":
        score = word_overlap(extract_answer(answer), label)
        if score < cfg.min_overlap:
            return f"misses the transcript (word overlap {score:.2f} < {cfg.min_overlap})"
    elif task.metric == "wer":
        score = wer(extract_answer(answer), label)
        if score > cfg.max_wer:
            return f"wrong transcript (WER {score:.2f} > {cfg.max_wer})"
    return None


# ---------------------------------------------------------------- running


def _messages(row: dict, instruction: str, cfg: DistillConfig) -> list[dict]:
    from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, teacher_user_message

    msgs = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}] if not cfg.no_system_prompt else []
    msgs.append({"role": "user", "content": teacher_user_message(row["description"], instruction,
                                                                 style=cfg.prompt_style)})
    return msgs


def _relocate_audio(row: dict, src: Path, dst: Path) -> dict:
    """Keep a relative audio path valid when the output JSONL lives in another directory."""
    audio = row.get("audio")
    if not audio or Path(str(audio)).is_absolute():
        return row
    full = (src.parent / str(audio)).resolve()
    return {**row, "audio": os.path.relpath(full, dst.parent.resolve())}


def choice_reply(option: str) -> str:
    """The one-word reply of `option_answers: choice`: "female" -> "Female."."""
    return option[:1].upper() + option[1:] + "."


def is_choice(template, cfg: DistillConfig) -> bool:
    """Whether this row's answer is the teacher's scored choice rather than a generated one."""
    from speech_adapter.templates import TASKS

    return (cfg.option_answers == "choice" and not template.constraints
            and TASKS[template.task].metric == "option")


def run_choices(items: list[dict], teacher: Teacher, cfg: DistillConfig) -> list[dict]:
    """`option_answers: choice`: the teacher scores every option as its whole reply ("Female.").
    A small LLM gives a one-word reply low likelihood whatever it read, with a prior for some
    options ("Male." over "Female."), so each option is scored by how much the clip's description
    raises it: log p(reply | description + instruction) - log p(reply | instruction alone)
    (domain-conditional PMI, Holtzman et al. 2021). The best option is the answer, checked like a
    generated one; deterministic, so one attempt. Adds `answer`/`reasons`/`attempts`/`sampling`."""
    from speech_adapter.templates import TASKS

    if not items:
        return items
    replies = [[choice_reply(o) for o in TASKS[it["template"].task].options(it["row"])] for it in items]
    heard = teacher.score([_messages(it["row"], it["instruction"], cfg) for it in items], replies)
    prior = teacher.score([_messages({**it["row"], "description": ""}, it["instruction"], cfg) for it in items],
                          replies)
    for it, options, with_clip, without in zip(items, replies, heard, prior):
        gain = [a - b for a, b in zip(with_clip, without)]
        answer = options[max(range(len(options)), key=gain.__getitem__)]
        reason = judge(answer, it["template"], it["row"], cfg)
        it.update(answer=None if reason else answer, reasons=[reason] if reason else [], attempts=1,
                  last_answer=answer, sampling={"choice": dict(zip(options, (round(g, 3) for g in gain)))})
    return items


def run_batch(items: list[dict], teacher: Teacher, cfg: DistillConfig) -> list[dict]:
    """SSR for a batch of {row, template, instruction, key}: greedy first, then seeded samples
    for the rows still failing, one round per extra attempt. Adds `answer`/`reason`/`attempts`.

    Rows answered by choice (`option_answers: choice`) are scored first (`run_choices`); where
    the scored choice is wrong, the teacher's generated answers get the usual attempts, and the
    option an accepted answer names becomes the one-word reply (so SSR keeps as many rows as
    with free answers, in label-first form)."""
    from speech_adapter.eval.scoring import parse_option
    from speech_adapter.templates import TASKS

    chosen = run_choices([it for it in items if is_choice(it["template"], cfg)], teacher, cfg)
    pending = [it for it in items if not is_choice(it["template"], cfg)]
    for item in pending:
        item.update(answer=None, reasons=[], attempts=0)
    pending += [it for it in chosen if it["answer"] is None]  # their scored choice was attempt 1
    for attempt in range(cfg.attempts):
        if not pending:
            break
        sampling = cfg.sampling(do_sample=attempt > 0)
        prompts = [_messages(it["row"], it["instruction"], cfg) for it in pending]
        seeds = [stable_seed(it["key"], attempt) for it in pending]
        answers = teacher.generate(prompts, n=1, sampling=sampling, seeds=seeds)
        still = []
        for it, (answer,) in zip(pending, answers):
            answer = trim_cut_off(answer)
            it["attempts"] += 1
            reason = judge(answer, it["template"], it["row"], cfg)
            if reason is None:
                it["answer"], record = answer, sampling.record()
                if is_choice(it["template"], cfg):  # the option the accepted answer names, label first
                    named = parse_option(answer, TASKS[it["template"].task].options(it["row"]))
                    it["answer"] = choice_reply(named)
                    record = {**it["sampling"], "generated": answer, **record}
                it["sampling"] = record
            else:
                it["reasons"].append(reason)
                it["last_answer"] = answer
                still.append(it)
        pending = still
    return items


_ANSWER_LENGTH = {"option": 0, "number": 0, "word_overlap": 2, "wer": 2, "open": 3}  # sort order


def distill(rows: list[dict], cfg: DistillConfig, teacher: Teacher | None = None,
            input_path: str | None = None) -> dict:
    """Distill `rows` (described rows) into `cfg.output`; returns the stats dict (also saved)."""
    from tqdm import tqdm

    from data_prep.rows import RejectLog, done_ids
    from speech_adapter.templates import TASKS, render
    from speech_adapter.utils.io import JsonlAppender, write_json_atomic

    out_path = Path(cfg.output)
    src = Path(input_path or cfg.input)
    done = done_ids(out_path, STAGE)
    work, skipped = [], 0
    for row in rows[: cfg.limit or None]:
        if not row.get("description"):
            raise DataError(f"{src}: row {row.get('id')!r} has no 'description'; run `data describe` first")
        for template in plan_clip(row, cfg):
            key = f"{row['id']}/{template.id}"
            if key in done:
                skipped += 1
                continue
            work.append({"row": row, "template": template, "key": key, "instruction": render(template, row)})
    # Batch rows of like answer length together: a batch decodes until its longest answer ends,
    # so one-word answers next to open descriptions would wait for them. Stable, so deterministic.
    work.sort(key=lambda it: -1 if is_choice(it["template"], cfg) else
              _ANSWER_LENGTH.get(TASKS[it["template"].task].metric, 1) + (1 if it["template"].constraints else 0))
    teacher = teacher or load_teacher(cfg.teacher_config())
    stats = _Stats()
    start = time.time()
    with JsonlAppender(out_path) as out, RejectLog(out_path, STAGE) as rejects, \
            tqdm(total=len(work), unit="row", disable=cfg.quiet, desc="distill") as bar:
        for i in range(0, len(work), cfg.batch_size):
            for it in run_batch(work[i:i + cfg.batch_size], teacher, cfg):
                t = it["template"]
                stats.add(t, it["answer"] is not None, it["attempts"], it["reasons"])
                if it["answer"] is None:
                    rejects.add(f"{t.id}: no acceptable answer in {it['attempts']} attempts: "
                                f"{'; '.join(dict.fromkeys(it['reasons']))} (last: {it['last_answer'][:80]!r})",
                                id=it["key"], source=str(src), kind=_reason_kind(it["reasons"][-1]))
                    continue
                out.write(_row(it, teacher, cfg, src, out_path))
            bar.update(min(cfg.batch_size, len(work) - i))
            bar.set_postfix(kept=f"{stats.kept}/{stats.total}")
    elapsed = time.time() - start
    session_rate = round(stats.total / elapsed, 3) if elapsed > 0 and stats.total else None
    result = stats_from_files(out_path).to_dict(
        skipped=skipped, elapsed_s=round(elapsed, 1), rows_this_run=stats.total, config=dataclasses.asdict(cfg),
        teacher=getattr(teacher, "model_id", "?"))
    result["rows_per_s"] = session_rate
    write_json_atomic(out_path.parent / STATS_NAME, result)
    return result


def _row(it: dict, teacher: Teacher, cfg: DistillConfig, src: Path, dst: Path) -> dict:
    from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT

    from speech_adapter.templates import TASKS

    t, row = it["template"], _relocate_audio(it["row"], src, dst)
    # the ground truth, where the metadata knows it: task_sft (the naive baseline) trains on it
    label = TASKS[t.task].label(row) if t.task in TASKS else None
    return {**row, "id": it["key"], "clip_id": row["id"], "instruction": it["instruction"],
            "template_id": t.id, "task": t.task, "split": t.split, "response": it["answer"],
            "label": None if label is None else str(label),
            "constraints": [dict(c) for c in t.constraints],
            "system": None if cfg.no_system_prompt else DEFAULT_SYSTEM_PROMPT,
            "teacher": {"model": getattr(teacher, "model_id", "?"), "sampling": it["sampling"],
                        "attempts": it["attempts"], "prompt_style": cfg.prompt_style}}


def stats_from_files(out_path: Path) -> "_Stats":
    """Stats over everything on disk (earlier runs included): kept rows and this stage's rejects."""
    from speech_adapter.templates import get_template
    from speech_adapter.utils.io import iter_jsonl
    from data_prep.rows import rejects_path

    stats = _Stats()
    if out_path.exists():
        for r in iter_jsonl(out_path, strict=False):
            stats.add(get_template(r["template_id"]), True, (r.get("teacher") or {}).get("attempts", 1), [])
    rej = rejects_path(out_path)
    if rej.exists():
        for r in iter_jsonl(rej, strict=False):
            if r.get("stage") == STAGE and "/" in str(r.get("id", "")):
                reason = r.get("reason", "").split("attempts: ", 1)[-1]
                stats.add(get_template(str(r["id"]).rsplit("/", 1)[1]), False, 0, reason.split("; "))
    return stats


def _reason_kind(reason: str) -> str:
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip()


class _Stats:
    """Kept fraction per template and per task, attempts used, reasons of rejection."""

    def __init__(self):
        self.by_template = collections.defaultdict(lambda: [0, 0])
        self.by_task = collections.defaultdict(lambda: [0, 0])
        self.attempts = collections.Counter()
        self.reasons = collections.Counter()
        self.kept = self.total = 0

    def add(self, template, kept: bool, attempts: int, reasons: list[str]):
        self.total += 1
        self.kept += kept
        for table, key in ((self.by_template, template.id), (self.by_task, template.task)):
            table[key][0] += 1
            table[key][1] += kept
        if kept:
            self.attempts[attempts] += 1
        for r in reasons:
            self.reasons[_reason_kind(r)] += 1

    def to_dict(self, **extra) -> dict:
        def table(d):
            return {k: {"rows": n, "kept": k_, "kept_fraction": round(k_ / n, 3) if n else None}
                    for k, (n, k_) in sorted(d.items())}
        return {"rows": self.total, "kept": self.kept,
                "kept_fraction": round(self.kept / self.total, 3) if self.total else None,
                "per_task": table(self.by_task), "per_template": table(self.by_template),
                "kept_at_attempt": dict(sorted(self.attempts.items())),
                "failed_answer_reasons": dict(self.reasons.most_common()), **extra}


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
