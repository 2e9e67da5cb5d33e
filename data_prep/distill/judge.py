"""Judging one teacher answer (pure functions): is it a usable training target for its row?

Every answer must be non-degenerate (not empty, no repetition loop, not too long or cut off
mid-sentence), must not talk about its input ("the description says", "[00:00") and must not
contradict the metadata ("a man" for a female speaker, "high-pitched" for a voice binned low).
Where the metadata knows the answer (an attribute mapped with `eval.scoring.parse_option`, a
count, the transcript's words) or the instruction sets a format (`eval.constraints`), the answer
must agree. Open rows (the describe family) must be about the clip: its words, or its speaker's
true gender or accent.

Each reason reads "KIND: detail" or "KIND (detail)"; `reason_kind` gives the KIND that rejects
and stats count.
"""

from __future__ import annotations

import re

from data_prep import nonspeech
from data_prep.distill.config import DistillConfig
from speech_adapter.eval.constraints import check_all
from speech_adapter.eval.scoring import GENDER_WORDS, extract_answer, parse_number, parse_option, wer, word_overlap
from speech_adapter.templates import ACCENTS, TASKS, Template

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
# the words that contradict each gender: the other one's
_GENDER_WORDS = {"female": set(GENDER_WORDS["male"]), "male": set(GENDER_WORDS["female"])}


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


def judge(answer: str, template: Template, row: dict, cfg: DistillConfig) -> str | None:
    """None when `answer` is a good target for (template, row), else the reason it is not."""
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


def reason_kind(reason: str) -> str:
    """The short category of a reason this module gives: its text before the first ':' or '('."""
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip()
