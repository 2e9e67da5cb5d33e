"""Magpie pseudo-replay: text-only instructions the backbone writes for itself, and its answers.

Magpie (Xu et al., 2024, "Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with
Nothing"): feed an aligned chat LLM only its chat template up to the start of a user turn; it
completes a plausible user instruction. Answering that instruction with the same model gives a
row of the model's own behaviour. Mixed into adapter training (pseudo
replay), such rows keep the frozen LLM's text abilities in place at no labelling cost.

Each candidate slot `magpie-NNNNNN` is either written (audio null, kind "text") or rejected with
its reason (degenerate, too short, duplicate instruction, refusal); reruns skip finished slots.
Instructions are sampled with per-slot seeds; answers are greedy.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from data_prep.distill.judge import degenerate_reason
from data_prep.rows import RejectLog, done_ids
from data_prep.teacher import Backend, Sampling, Teacher, TeacherConfig, stable_seed
from data_prep.teachers import load_teacher
from speech_adapter.config import help_field
from speech_adapter.errors import ConfigError
from speech_adapter.paths import OFFLINE_LLM
from speech_adapter.utils.io import JsonlAppender, iter_jsonl

STAGE = "magpie"
_SENTINEL = "\x00MAGPIE\x00"
_REFUSAL = re.compile(r"\b(as an ai|i'm sorry|i am sorry|i cannot|i can't|i don't have the (ability|capability))\b",
                      re.IGNORECASE)


@dataclasses.dataclass
class MagpieConfig:
    """`data magpie`: self-written text instructions and answers for pseudo replay."""

    output: str = help_field("", "output JSONL of text rows; rejects.jsonl goes beside it")
    num_candidates: int = help_field(100, "instruction slots to try; fewer rows survive the filters")
    seed: int = help_field(0, "seed of the sampled instructions")
    model: str = help_field(OFFLINE_LLM, "backbone LLM (same as the distill teacher)")
    backend: Backend = help_field("transformers", "transformers | ctranslate2 (fast on CPU) | vllm (GPU)")
    dtype: str = help_field("float32", "teacher dtype")
    batch_size: int = help_field(8, "prompts per generate call")
    temperature: float = help_field(1.0, "instruction sampling temperature (Magpie uses 1.0)")
    top_p: float = help_field(0.99, "instruction sampling top-p")
    max_instruction_tokens: int = help_field(64, "longest instruction in tokens")
    max_new_tokens: int = help_field(200, "longest answer in tokens")
    min_instruction_words: int = help_field(4, "reject shorter instructions")
    max_words: int = help_field(150, "reject longer answers (likely cut off)")
    keep_refusals: bool = help_field(False, "keep answers that refuse ('As an AI, I cannot ...')")
    quiet: bool = help_field(False, "no progress bar")

    def validate(self):
        if not self.output:
            raise ConfigError("output: required")
        if self.num_candidates < 1:
            raise ConfigError("num_candidates: must be >= 1")
        TeacherConfig(self.model, self.backend, self.dtype, self.batch_size).validate()


def user_turn_prefix(teacher: Teacher) -> str:
    """The chat template up to where the user's words begin (system turn included, if the
    template adds a default one). Raises ConfigError when the template has no user turn."""
    text = teacher.format([{"role": "user", "content": _SENTINEL}], add_generation_prompt=False)
    if _SENTINEL not in text:
        raise ConfigError(f"teacher {teacher.model_id}: its chat template drops the user message")
    return text[: text.index(_SENTINEL)]


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def instruction_reason(text: str, cfg: MagpieConfig, seen: set[str]) -> str | None:
    reason = degenerate_reason(text, cfg.max_words, check_leaks=False)
    if reason:
        return f"instruction: {reason}"
    if len(re.findall(r"\w+", text)) < cfg.min_instruction_words:
        return f"instruction too short (< {cfg.min_instruction_words} words)"
    tokens = text.split()
    wordy = sum(bool(re.fullmatch(r"[\"'(]?[A-Za-z][a-z'’-]*[.,!?;:)\"']*", t)) for t in tokens)
    if wordy < 0.7 * len(tokens):
        return "instruction is not plain language (too many non-word tokens)"
    if _norm(text) in seen:
        return "duplicate instruction"
    return None


def answer_reason(text: str, cfg: MagpieConfig) -> str | None:
    reason = degenerate_reason(text, cfg.max_words, check_leaks=False)
    if reason:
        return f"answer: {reason}"
    if not cfg.keep_refusals and _REFUSAL.search(text):
        return "answer: refusal"
    return None


def magpie(cfg: MagpieConfig, teacher: Teacher | None = None) -> dict:
    """Write Magpie text rows to `cfg.output`; returns {"candidates", "kept", "rejected", ...}."""
    from tqdm import tqdm

    out_path = Path(cfg.output)
    done = done_ids(out_path, STAGE)
    seen = {_norm(r["instruction"]) for r in iter_jsonl(out_path, strict=False)} if out_path.exists() else set()
    slots = [i for i in range(cfg.num_candidates) if f"magpie-{i:06d}" not in done]
    teacher = teacher or load_teacher(TeacherConfig(cfg.model, cfg.backend, cfg.dtype, cfg.batch_size))
    prefix = user_turn_prefix(teacher)
    ask = Sampling(True, cfg.temperature, cfg.top_p, cfg.max_instruction_tokens, cfg.seed)
    answer = Sampling(False, max_new_tokens=cfg.max_new_tokens)
    kept = rejected = 0
    start = time.time()
    with JsonlAppender(out_path) as out, RejectLog(out_path, STAGE) as rejects, \
            tqdm(total=len(slots), unit="row", disable=cfg.quiet, desc="magpie") as bar:
        for b in range(0, len(slots), cfg.batch_size):
            batch = slots[b:b + cfg.batch_size]
            instructions = [a[0] for a in teacher.generate_raw(
                [prefix] * len(batch), 1, ask, seeds=[stable_seed("magpie", i) for i in batch])]
            good = []
            for i, text in zip(batch, instructions):
                reason = instruction_reason(text, cfg, seen)
                if reason:
                    rejects.add(f"{reason} ({text[:60]!r})", id=f"magpie-{i:06d}", kind=reason.split(" (")[0])
                    rejected += 1
                    continue
                seen.add(_norm(text))
                good.append((i, text))
            answers = teacher.generate([[{"role": "user", "content": t}] for _, t in good], 1, answer) if good else []
            for (i, text), (resp,) in zip(good, answers):
                reason = answer_reason(resp, cfg)
                if reason:
                    rejects.add(f"{reason} ({resp[:60]!r})", id=f"magpie-{i:06d}", kind=reason.split(" (")[0])
                    rejected += 1
                    continue
                out.write({"id": f"magpie-{i:06d}", "audio": None, "kind": "text", "instruction": text,
                           "response": resp, "template_id": None, "task": "magpie", "split": "seen",
                           "constraints": [], "system": None,
                           "teacher": {"model": getattr(teacher, "model_id", "?"), "attempts": 1,
                                       "sampling": {"instruction": ask.record(), "response": answer.record()}}})
                kept += 1
            bar.update(len(batch))
    elapsed = time.time() - start
    return {"candidates": len(slots), "kept": kept, "rejected": rejected, "skipped": len(done),
            "rows_per_s": round(len(slots) / elapsed, 3) if elapsed > 0 else None}
