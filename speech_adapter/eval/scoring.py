"""Scoring free-form answers: normalization, option parsing, numbers, WER and word overlap.

Classification follows Dynamic-SUPERB (Huang et al., 2024): the options are listed in the
instruction and a free answer is mapped onto exactly one of them, or counted wrong. The parser is
conservative: an answer naming two options, or only negating one ("not male"), maps to None.
WER is the usual word-level Levenshtein distance over normalized words (same numbers as jiwer on
normalized text, without the runtime dependency).
"""

from __future__ import annotations

import re
from collections import Counter

from speech_adapter.eval.constraints import parse_json

_PUNCT = re.compile(r"[^\w\s']|_")  # hyphens split words: "low-pitched" -> "low pitched"
_SPACE = re.compile(r"\s+")
NEGATIONS = {"not", "no", "never", "neither", "nor", "isn't", "isnt", "aren't", "wasn't",
             "doesn't", "don't", "cannot", "can't", "without", "non"}
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}


def normalize(text) -> str:
    """Lowercase, drop punctuation (keeping ' inside words; hyphens split), collapse whitespace."""
    text = str(text or "").lower().replace("’", "'")
    text = _PUNCT.sub(" ", text)
    text = " ".join(t.strip("'") for t in text.split())
    return _SPACE.sub(" ", text).strip()


def extract_answer(text) -> str:
    """The answer inside a format wrapper: a JSON object's "answer" (or only) value, quotes removed."""
    text = str(text or "").strip()
    value = parse_json(text, lenient=True)
    if isinstance(value, dict):
        if "answer" in value:
            return str(value["answer"])
        if len(value) == 1:
            return str(next(iter(value.values())))
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text


def _spans(words: list[str], option_words: list[str]) -> list[int]:
    n = len(option_words)
    return [i for i in range(len(words) - n + 1) if words[i:i + n] == option_words]


def parse_option(answer, options: list[str], focus=()) -> str | None:
    """Map a free answer onto one of `options`, or None when absent or ambiguous.

    Handles case, punctuation, sentences ("The speaker is female."), JSON {"answer": ...},
    options that contain each other ("low" vs "very low": the longest match wins) and negation
    ("not male, female" -> female; a bare "not male" -> None). When the whole answer is
    ambiguous and `focus` words are given (e.g. ("pitch",)), only the sentences that mention one
    are read: "The pitch is high. The volume is low." -> high.
    """
    if not options:
        return None
    picked = _parse_option(extract_answer(answer), options)
    if picked is None and focus:
        pieces = re.split(r"[.!?;\n]+", str(answer or ""))
        keep = [p for p in pieces if any(f in normalize(p) for f in focus)]
        if keep and len(keep) < len(pieces):
            picked = _parse_option(". ".join(keep), options)
        if picked is None and sorted(normalize(o) for o in options) == ["no", "yes"]:
            picked = _yes_no_statement(keep, options, focus)
    return picked


_STATEMENT_NEGATIONS = NEGATIONS | {"nobody", "nothing", "none"}


_HEDGES = {"maybe", "perhaps", "possibly", "unclear", "whether", "if"}


def _yes_no_statement(sentences: list[str], options: list[str], focus) -> str | None:
    """A yes/no question answered by a statement about the focus ("This clip holds speech." → yes;
    "There is no speech in it.", "Speech is not present." → no). Each clause (split at commas,
    "but", "only") that names a focus word is a no when it holds a negation outside quotes, else
    a yes ("There is no music, only speech." → yes; "The speaker says: "I am not here."" → yes);
    all must agree. A hedge or a question ("maybe", "whether") reads as None."""
    def names_focus(words):
        return any(w.startswith(f) for w in words for f in focus)

    verdicts = set()
    for sentence in sentences:
        text = str(sentence).replace("“", '"').replace("”", '"')
        if _HEDGES & set(normalize(text).split()):
            return None
        outside, quoted = " ".join(text.split('"')[::2]), " ".join(text.split('"')[1::2])
        for clause in re.split(r",|\bbut\b|\bonly\b", outside):
            words = normalize(clause).split()
            if names_focus(words):
                verdicts.add(bool(set(words) & _STATEMENT_NEGATIONS))
        if names_focus(normalize(quoted).split()):  # 'did not say "cactus"': the words around the quote decide
            verdicts.add(bool(set(normalize(outside).split()) & _STATEMENT_NEGATIONS))
    if len(verdicts) != 1:
        return None
    want = "no" if verdicts.pop() else "yes"
    return next(o for o in options if normalize(o) == want)


# Words that name an option without its literal text ("The voice belongs to a woman." answers
# "female"); matched as whole words, so "woman" never matches "man".
OPTION_ALIASES: dict[str, tuple[str, ...]] = {
    "female": ("woman", "women", "lady", "girl", "feminine"),
    "male": ("man", "men", "gentleman", "boy", "masculine"),
    # the `sound` task's kinds
    "speech": ("speaking", "talking", "spoken"),
    "tone": ("tones", "beep", "beeps"),
    "silence": ("silent",),
    "animal": ("animals",),
}

# Every word that names a speaker's gender: the option, its aliases, the pronouns a description
# uses ("Her voice is ..."). The distill judge rejects an answer naming the other gender;
# train.key_word_weight weighs these words in a target.
GENDER_WORDS: dict[str, tuple[str, ...]] = {
    "female": ("female", *OPTION_ALIASES["female"], "she", "her", "hers"),
    "male": ("male", *OPTION_ALIASES["male"], "he", "his", "him"),
}


# The words of one gender to say the other's with (distill.label_fallback_tasks on generated
# answers); "her" becomes "his": a short answer about a voice uses the possessive ("Her voice is")
_TO_MALE = dict(zip(GENDER_WORDS["female"], GENDER_WORDS["male"])) | {"hers": "his"}
OPTION_SWAPS: dict[str, dict[str, dict[str, str]]] = {
    "gender": {"male": _TO_MALE, "female": {m: f for f, m in _TO_MALE.items()} | {"his": "her", "him": "her"}}}


def swap_to_label(answer: str, task: str, label: str, keep: str = "") -> str | None:
    """`answer` with each word naming another option of `task` replaced by its counterpart naming
    `label` ("The male speaker is talking." -> "The female speaker is talking."), capitals kept;
    words also in `keep` (the clip's transcript, which the answer may quote) stay. None when the
    task has no swap table (`OPTION_SWAPS`) or no word was swapped."""
    table = OPTION_SWAPS.get(task, {}).get(str(label).lower())
    if not table:
        return None
    quoted = set(normalize(keep).split())
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, table)) + r")\b", re.IGNORECASE)

    def swap(m: re.Match) -> str:
        said = m.group(0)
        if said.lower() in quoted:
            return said
        word = table[said.lower()]
        if said.isupper() and len(said) > 1:  # "MALE" under an all-capitals rule stays in capitals
            return word.upper()
        return word.capitalize() if said[:1].isupper() else word

    swapped = pattern.sub(swap, answer)
    return swapped if swapped != answer else None


def _parse_option(text: str, options: list[str]) -> str | None:
    words = normalize(text).split()
    if not words:
        return None
    norm = {opt: normalize(opt).split() for opt in options}
    exact = [opt for opt, w in norm.items() if w == words]
    if len(exact) == 1:
        return exact[0]
    spellings = [(opt, w) for opt in options for w in
                 [norm[opt]] + [a.split() for a in OPTION_ALIASES.get(" ".join(norm[opt]), ())]]
    taken = [False] * len(words)
    found: dict[str, bool] = {}  # option -> has an affirmed (non-negated) mention
    for opt, ow in sorted(spellings, key=lambda s: -len(s[1])):
        if not ow:
            continue
        for start in _spans(words, ow):
            if any(taken[start:start + len(ow)]):
                continue  # inside a longer option already matched
            for j in range(start, start + len(ow)):
                taken[j] = True
            before = words[max(0, start - 3):start]
            negated = any(w in NEGATIONS and w not in ow for w in before)
            found[opt] = found.get(opt, False) or not negated
    affirmed = [opt for opt, ok in found.items() if ok]
    return affirmed[0] if len(affirmed) == 1 else None


def parse_number(answer) -> int | None:
    """The first integer in an answer (digits or an English number word up to twenty)."""
    for w in normalize(extract_answer(answer)).split():
        if w.isdigit():
            return int(w)
        if w in _NUMBER_WORDS:
            return _NUMBER_WORDS[w]
    return None


def _edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


_UNITS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_TEENS = {w: str(i + 10) for i, w in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: str(i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}


def spoken_digits(words: list[str]) -> list[str]:
    """Numbers as single digits, whether written or spoken: "645 3364", "six four five three three
    six four" and "six forty five ..." all meet as digits; "twenty one" and "21" both become
    "2 1"; "oh" between digits is 0 (AN4's "three oh nine"). Other words pass through."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w.isdigit():
            out.extend(w)
        elif w in _UNITS:
            out.append(_UNITS[w])
        elif w in _TEENS:
            out.extend(_TEENS[w])
        elif w in _TENS:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if nxt in _UNITS and nxt != "zero":
                out.extend([_TENS[w], _UNITS[nxt]])
                i += 1
            else:
                out.extend([_TENS[w], "0"])
        elif w == "oh" and out and out[-1].isdigit() and i + 1 < len(words) and (
                words[i + 1].isdigit() or words[i + 1] in _UNITS):
            out.append("0")
        else:
            out.append(w)
        i += 1
    return out


# a short lead-in that names what follows ("Transcript of the audio:", "The speaker said:")
_LEAD_IN = re.compile(r'^\s*(?:[^\s:"“”]+\s+){0,5}[^\s:"“”]+\s*:\s+(?=\S)')


def quoted_span(text: str) -> str:
    """The words an answer gives as said: its longest double-quoted span ('I heard someone say:
    "..."' → the words), else the answer after a lead-in of at most six words ending in a colon
    ("Transcript of the audio: ..."), else the whole answer."""
    text = str(text or "")
    spans = re.findall(r'"([^"]+)"|“([^”]+)”', text)
    spans = [a or b for a, b in spans]
    if spans:
        return max(spans, key=len)
    return _LEAD_IN.sub("", text, count=1)


def wer(hypothesis, reference) -> float:
    """Word error rate of `hypothesis` against `reference` after `normalize`, numbers compared
    digit by digit (`spoken_digits`); can exceed 1."""
    ref = spoken_digits(normalize(reference).split())
    hyp = spoken_digits(normalize(hypothesis).split())
    if not ref:
        return 0.0 if not hyp else 1.0
    return _edit_distance(ref, hyp) / len(ref)


def word_overlap(hypothesis, reference) -> float:
    """Recall of the reference's words (as a multiset) in the hypothesis, in [0, 1]."""
    ref = Counter(normalize(reference).split())
    if not ref:
        return 1.0
    hyp = Counter(normalize(hypothesis).split())
    return sum((ref & hyp).values()) / sum(ref.values())


def score_answer(answer: str, label, metric: str, options: list[str] | None = None, focus=()) -> float | None:
    """A score in [0, 1] for one answer (None for the open metric, which has no label).

    metrics: "option" (exact match after option parsing, `focus` as in `parse_option`), "number" (first integer equals the
    label), "exact" (normalized exact match), "wer" (1 - WER of the answer's longest quoted span, floored at 0), "word_overlap".
    """
    if metric == "open" or label is None:
        return None
    if metric == "option":
        if options:
            picked = parse_option(answer, options, focus)
            return float(picked is not None and normalize(picked) == normalize(label))
        metric = "exact"
    if metric == "exact":
        return float(normalize(extract_answer(answer)) == normalize(label))
    if metric == "number":
        return float(parse_number(answer) == int(label))
    if metric == "wer":
        return max(0.0, 1.0 - wer(quoted_span(extract_answer(answer)), label))
    if metric == "word_overlap":
        return word_overlap(extract_answer(answer), label)
    raise ValueError(f"unknown metric {metric!r}")
