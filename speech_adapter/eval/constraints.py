"""IFEval-style verifiable format constraints: one small checker per constraint.

Follows IFEval (Zhou et al., 2023, "Instruction-Following Evaluation for Large Language Models")
and its speech version Speech-IFEval (Lu et al., 2025), which measures how much of this ability a
speech LLM keeps relative to its text backbone. Each constraint has a stable short id, a checker
`fn(text, **kwargs) -> bool` and an instruction sentence that asks for it, so templates can be
made format-constrained and distillation can filter teacher answers with the same code.

Constraint dicts travel in rows as `{"id": "json", "kwargs": {"keys": ["answer"]}}`.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from speech_adapter.config import did_you_mean
from speech_adapter.errors import DataError

RELATIONS = ("<=", ">=", "==")


def _compare(value: int, n: int, relation: str) -> bool:
    if relation == "<=":
        return value <= n
    if relation == ">=":
        return value >= n
    if relation == "==":
        return value == n
    raise DataError(f"constraint relation {relation!r} is not one of {list(RELATIONS)}")


_FENCE = re.compile(r"^```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?```$", re.DOTALL)


def strip_json_fence(text: str) -> str:
    """Remove one surrounding ```json ... ``` fence (and whitespace), if present."""
    text = text.strip()
    m = _FENCE.match(text)
    return m.group(1).strip() if m else text


def parse_json(text: str, lenient: bool = False):
    """The JSON value `text` holds, or None. `lenient` also accepts a ```json fence."""
    body = strip_json_fence(text) if lenient else text.strip()
    try:
        return json.loads(body)
    except (ValueError, TypeError):
        return None


def check_json(text: str, keys: list[str] | None = None, lenient: bool = False) -> bool:
    """The whole answer is JSON (an object when `keys` is given, holding every key)."""
    body = strip_json_fence(text) if lenient else text.strip()
    try:
        value = json.loads(body)
    except (ValueError, TypeError):
        return False
    if keys:
        return isinstance(value, dict) and all(k in value for k in keys)
    return True


def check_lowercase(text: str) -> bool:
    """No uppercase letters at all (and at least one letter)."""
    return any(c.isalpha() for c in text) and text == text.lower()


def check_uppercase(text: str) -> bool:
    """No lowercase letters at all (and at least one letter)."""
    return any(c.isalpha() for c in text) and text == text.upper()


def check_quoted(text: str) -> bool:
    """The whole answer is wrapped in double quotes."""
    t = text.strip()
    return len(t) >= 2 and t[0] == '"' and t[-1] == '"'


_TITLE = re.compile(r"<<[^<>\n]+>>")


def check_title(text: str) -> bool:
    """The answer contains a title in double angle brackets, e.g. <<Summary>>."""
    return bool(_TITLE.search(text))


def check_starts_with(text: str, prefix: str) -> bool:
    """The answer (leading whitespace ignored) starts with `prefix`."""
    return text.lstrip().startswith(prefix)


def check_ends_with(text: str, suffix: str) -> bool:
    """The answer (trailing whitespace ignored) ends with `suffix`."""
    return text.rstrip().endswith(suffix)


_WORD = re.compile(r"\b\w[\w'’-]*\b")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def count_sentences(text: str) -> int:
    """Sentences as runs of text ended by . ! ? (or the end), ignoring empty pieces."""
    pieces = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return sum(1 for p in pieces if _WORD.search(p))


_BULLET = re.compile(r"^\s*(?:[*\-•]|\d+[.)])\s+\S", re.MULTILINE)


def count_bullets(text: str) -> int:
    """Markdown bullet lines: '* x', '- x', '• x' or '1. x'."""
    return len(_BULLET.findall(text))


def check_num_words(text: str, n: int, relation: str = "<=") -> bool:
    return _compare(count_words(text), int(n), relation)


def check_num_sentences(text: str, n: int, relation: str = "<=") -> bool:
    return _compare(count_sentences(text), int(n), relation)


def check_num_bullets(text: str, n: int, relation: str = "==") -> bool:
    return _compare(count_bullets(text), int(n), relation)


def check_no_comma(text: str) -> bool:
    return "," not in text


def check_one_word(text: str) -> bool:
    """Exactly one word (surrounding punctuation and quotes allowed)."""
    return count_words(text) == 1


CHECKERS: dict[str, Callable[..., bool]] = {
    "json": check_json,
    "lowercase": check_lowercase,
    "uppercase": check_uppercase,
    "quoted": check_quoted,
    "title": check_title,
    "starts_with": check_starts_with,
    "ends_with": check_ends_with,
    "num_words": check_num_words,
    "num_sentences": check_num_sentences,
    "num_bullets": check_num_bullets,
    "no_comma": check_no_comma,
    "one_word": check_one_word,
}

_REL_WORDS = {"<=": "at most", ">=": "at least", "==": "exactly"}


def instruction_text(constraint_id: str, **kwargs) -> str:
    """The sentence that asks for a constraint, e.g. 'Answer in JSON with the key "answer".'"""
    _known(constraint_id)
    if constraint_id == "json":
        keys = kwargs.get("keys") or []
        if not keys:
            return "Answer in valid JSON only."
        names = ", ".join(f'"{k}"' for k in keys)
        noun = "key" if len(keys) == 1 else "keys"
        return f"Answer in JSON with the {noun} {names}, and nothing else."
    rel = _REL_WORDS.get(kwargs.get("relation", ""), "")
    n = kwargs.get("n")
    texts = {
        "lowercase": "Write your whole answer in lowercase letters only.",
        "uppercase": "Write your whole answer in capital letters only.",
        "quoted": "Wrap your entire answer in double quotation marks.",
        "title": "Give your answer a title wrapped in double angular brackets, like <<title>>.",
        "starts_with": f'Start your answer with "{kwargs.get("prefix", "")}".',
        "ends_with": f'End your answer with the exact phrase "{kwargs.get("suffix", "")}".',
        "num_words": f"Answer in {rel} {n} words.",
        "num_sentences": f"Answer in {rel} {n} sentence{'s' if n != 1 else ''}.",
        "num_bullets": f"Answer with {rel} {n} bullet points, using markdown bullets such as '* point'.",
        "no_comma": "Do not use any commas in your answer.",
        "one_word": "Answer with a single word.",
    }
    return texts[constraint_id]


def _known(constraint_id: str) -> Callable[..., bool]:
    fn = CHECKERS.get(constraint_id)
    if fn is None:
        hint = did_you_mean(constraint_id, CHECKERS, otherwise=f"; known: {', '.join(CHECKERS)}")
        raise DataError(f"unknown constraint id {constraint_id!r}{hint}")
    return fn


def check(constraint_id: str, text: str, **kwargs) -> bool:
    """Run one checker. Raises `DataError` for an unknown id or bad kwargs."""
    fn = _known(constraint_id)
    try:
        return bool(fn(text or "", **kwargs))
    except TypeError as e:
        raise DataError(f"constraint {constraint_id!r}: bad kwargs {kwargs!r} ({e})") from None


def check_all(constraints: list[dict], text: str) -> dict[str, bool]:
    """{constraint id: passed} for each `{"id", "kwargs"}`; a repeated id gets '#2', '#3' …"""
    out: dict[str, bool] = {}
    for c in constraints or []:
        if not isinstance(c, dict) or "id" not in c:
            raise DataError(f"a constraint must be a mapping with an 'id', got {c!r}")
        key, k = c["id"], 2
        while key in out:
            key, k = f"{c['id']}#{k}", k + 1
        out[key] = check(c["id"], text, **(c.get("kwargs") or {}))
    return out
