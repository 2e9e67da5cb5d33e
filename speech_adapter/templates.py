"""Instruction templates shared by distillation and evaluation.

Shape follows Dynamic-SUPERB (Huang et al., 2024): a classification instruction lists its options
("... Answer with one of: male, female."); format-constrained variants append an IFEval-style
constraint sentence (Speech-IFEval, Lu et al., 2025), so one registry serves self-distillation
(DeSTA2: only `seen` templates are used for training) and the retention eval (`unseen` templates
measure generalisation to new phrasings).

Ids are `<task>.<NN>` and stable: new templates are only ever appended to a task's lists.
A template's split is fixed by its position (index % 5 in {1, 3} -> unseen, ~40 %).

A row known to hold no speech (`meta.speech` false: `data synth`'s noise, tones and music, the
real suite's non-speech clips) is asked only what it has: `speech` ("no"), `sound`, volume,
duration, `speaker_count` (0) and the open `describe`; the tasks about a speaker or words give
no label there, so they are not applicable.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from typing import Callable

from speech_adapter.errors import DataError
from speech_adapter.eval.constraints import instruction_text

LEVELS = ["very low", "low", "normal", "high", "very high"]
SPEEDS = ["very slow", "slow", "normal", "fast", "very fast"]
# same labels as data_prep.attributes.BINS (lowercased), so measured bins are askable as is
DURATIONS = ["very short", "short", "medium", "long", "very long"]
NOISE = ["very low", "low", "medium", "high", "very high"]
ACCENTS = ["American English", "British English", "Scottish English", "Caribbean English",
           "New York English", "Received Pronunciation", "Lancastrian English",
           "West Midlands English"]
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German",
                  "it": "Italian", "pt": "Portuguese", "nl": "Dutch", "pl": "Polish",
                  "ru": "Russian", "zh": "Chinese", "ja": "Japanese", "hi": "Hindi",
                  "sv": "Swedish", "fi": "Finnish", "tr": "Turkish", "el": "Greek"}
DISTRACTORS = ["elephant", "guitar", "volcano", "bicycle", "umbrella", "pyramid", "dolphin",
               "chocolate", "satellite", "lantern", "penguin", "tornado", "violin", "cactus"]
# what the `sound` task tells apart: speech, data_prep.nonspeech.SOUNDS, and the real suite's animals
SOUND_KINDS = ["speech", "music", "noise", "tone", "silence", "animal"]
BARE = ":bare"  # id suffix of a template asked without its option list
_STOP = set("""the a an and or but of to in on at for with from by is are was were be been this
that these those it its as not no yes you your we our they their he she his her i me my have has
had do does did will would can could should there here what which who whom when where why how
very just than then them into over about""".split())


@dataclasses.dataclass(frozen=True)
class Template:
    """One instruction: `text` may hold {options} and {word}; `constraints` are [{id, kwargs}]."""

    id: str
    task: str
    text: str
    split: str  # "seen" | "unseen"
    constraints: tuple = ()
    kind: str = "plain"  # "plain" | "constrained"
    # the phrasing without its option sentence ("What is the gender of the speaker?"), for plain
    # templates of option tasks; "" where there is none
    bare: str = ""

    def as_bare(self) -> "Template":
        """This template asked without its option list, id `<id>:bare` (distillation's and the
        suite's `bare_fraction`). `DataError` for a template that has no bare phrasing."""
        if not self.bare:
            raise DataError(f"template {self.id} has no bare phrasing (only plain option-task templates do)")
        return dataclasses.replace(self, id=f"{self.id}{BARE}", text=self.bare, bare="")


@dataclasses.dataclass(frozen=True)
class Task:
    """How a task gets its label and options from a row, and how answers are scored."""

    name: str
    options: Callable[[dict], list[str] | None]
    label: Callable[[dict], str | None]
    metric: str  # "option" | "number" | "wer" | "word_overlap" | "open"
    needs: str = ""  # what the row must carry, for error messages
    focus: tuple = ()  # words naming the attribute: scoring reads those sentences of a long answer


# ---------------------------------------------------------------- labels from rows


def _meta(row: dict) -> dict:
    return row.get("meta") or {}


def _speech(row) -> str | None:
    """The `speech` label: from `meta.speech`, else "yes" for a row with a transcript, else None."""
    known = _meta(row).get("speech")
    if known is not None:
        return "yes" if known else "no"
    return "yes" if (row.get("transcript") or "").strip() else None


def _sound(row) -> str | None:
    if _speech(row) == "yes":
        return "speech"
    kind = _meta(row).get("sound")
    return kind if _speech(row) == "no" and kind in SOUND_KINDS else None


def _speech_only(fn: Callable[[dict], object]) -> Callable[[dict], object]:
    """`fn`, except None for a row known to hold no speech: a speaker's gender, words or pitch
    are no property of a tone (a label invented there would become a wrong target)."""

    def wrapped(row: dict):
        return None if _meta(row).get("speech") is False else fn(row)

    return wrapped


def _bin(row: dict, name: str) -> str | None:
    value = (row.get("bins") or {}).get(name)
    return str(value).strip().lower() if value else None


def _level(value, edges: list[float], labels: list[str]) -> str | None:
    if value is None:
        return None
    for edge, label in zip(edges, labels):
        if float(value) < edge:
            return label
    return labels[-1]


def _binned(name: str, meta_key: str | None, edges: list[float], scale: list[str]):
    """Label from the measured `bins[name]`, else from a synthetic meta value and `edges`."""

    def label(row: dict) -> str | None:
        b = _bin(row, name)
        if b is not None:
            return b
        value = _meta(row).get(meta_key) if meta_key else row.get("duration")
        return _level(value, edges, scale)

    def options(row: dict) -> list[str] | None:
        lab = label(row)
        return list(scale) if lab in scale else None  # an unknown bin name: not askable

    return label, options


def _stable_int(*parts) -> int:
    return int(hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _pick_options(pool: list[str], label: str | None, row: dict, k: int = 4) -> list[str] | None:
    """`label` plus k-1 distractors from `pool`, chosen by the row id, sorted (no position cue)."""
    if not label:
        return None
    others = [p for p in pool if p.lower() != label.lower()]
    others.sort(key=lambda p: _stable_int(row.get("id"), p))
    return sorted([label] + others[: k - 1])


def _gender(row):
    g = str(_meta(row).get("gender") or "").lower()
    return g if g in ("male", "female") else None


def _accent(row):
    return _meta(row).get("accent") or None


def _language(row):
    code = row.get("language") or _meta(row).get("language")
    if not code:
        return None
    code = str(code)
    return LANGUAGE_NAMES.get(code.split("-")[0].lower(), code)


def _words(row) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", row.get("transcript") or "")


def _word_count(row):
    return str(len(_words(row))) if row.get("transcript") else None


def _speakers(row):
    if _meta(row).get("speech") is False:
        return "0"
    n = _meta(row).get("speakers")
    return str(int(n)) if n is not None else None


def mention_word(row: dict) -> tuple[str, bool]:
    """(word, present) for 'does the speaker mention X': a transcript word or a distractor."""
    content = sorted({w.lower() for w in _words(row) if len(w) >= 4 and w.lower() not in _STOP})
    absent = [d for d in DISTRACTORS if d not in {w.lower() for w in _words(row)}]
    h = _stable_int(row.get("id"), "mention")
    if content and h % 2 == 0:
        return content[h // 2 % len(content)], True
    return absent[h // 2 % len(absent)], False


def _transcript(row):
    return row.get("transcript") or None


def _yes_no(row):
    return ["yes", "no"] if row.get("transcript") else None


_pitch_label, _pitch_opts = _binned("pitch", "pitch", [20, 40, 60, 80], LEVELS)
_speed_label, _speed_opts = _binned("speed", "rate", [120, 150, 200, 250], SPEEDS)
_volume_label, _volume_opts = _binned("volume", "volume", [50, 80, 121, 160], LEVELS)
_duration_label, _duration_opts = _binned("duration", None, [1.5, 3.0, 6.0, 12.0], DURATIONS)


def _noise_label(row):
    b = _bin(row, "noise")
    if b is not None:
        return b
    if "snr_db" not in _meta(row):
        return None
    snr = _meta(row).get("snr_db")
    return "very low" if snr is None else _level(-float(snr), [-35, -20, -10, 0], NOISE)


def _noise_opts(row):
    return list(NOISE) if _noise_label(row) in NOISE else None


def _none(row):
    return None


def _speech_task(name, options, label, metric, needs, focus=()) -> Task:
    return Task(name, _speech_only(options), _speech_only(label), metric, needs, focus)


TASKS: dict[str, Task] = {t.name: t for t in [
    _speech_task("gender", lambda r: ["female", "male"] if _gender(r) else None, _gender, "option", "meta.gender",
                 ("gender", "male", "female", "man", "woman")),
    _speech_task("pitch", _pitch_opts, _pitch_label, "option", "bins.pitch or meta.pitch", ("pitch",)),
    _speech_task("speed", _speed_opts, _speed_label, "option", "bins.speed or meta.rate",
                 ("speed", "pace", "rate", "tempo")),
    Task("volume", _volume_opts, _volume_label, "option", "bins.volume or meta.volume",
         ("volume", "loud")),
    _speech_task("accent", lambda r: _pick_options(ACCENTS, _accent(r), r), _accent, "option", "meta.accent",
                 ("accent",)),
    _speech_task("language", lambda r: _pick_options(sorted(set(LANGUAGE_NAMES.values())), _language(r), r),
                 _language, "option", "language", ("language",)),
    Task("duration", _duration_opts, _duration_label, "option", "bins.duration or duration",
         ("duration", "long", "length", "short")),
    # the background noise around speech (an SNR): no label without speech
    _speech_task("noise", _noise_opts, _noise_label, "option", "bins.noise or meta.snr_db", ("noise", "noisy")),
    _speech_task("word_count", _none, _word_count, "number", "transcript"),
    Task("speaker_count", _none, _speakers, "number", "meta.speakers (0 where meta.speech is false)"),
    _speech_task("content", _yes_no,
                 lambda r: ("yes" if mention_word(r)[1] else "no") if r.get("transcript") else None,
                 "option", "transcript"),
    _speech_task("content_qa", _none, _transcript, "word_overlap", "transcript"),
    _speech_task("transcription", _none, _transcript, "wer", "transcript"),
    Task("describe", _none, _none, "open", ""),
    Task("speech", lambda r: ["yes", "no"] if _speech(r) else None, _speech, "option",
         "meta.speech or a transcript", ("speech", "speaking", "talking", "voice", "spoken")),
    Task("sound", lambda r: list(SOUND_KINDS) if _sound(r) else None, _sound, "option",
         "meta.speech and, without speech, meta.sound", ("sound", "speech", "music", "noise", "tone", "silence",
                                                           "animal")),
]}

# ---------------------------------------------------------------- phrasings

_OPT = ["Answer with one of: {options}.", "Choose from: {options}.", "Options: {options}.",
        "The answer could be one of: {options}."]

_PLAIN: dict[str, list[str]] = {
    "gender": ["Is the speaker male or female?", "What is the gender of the speaker?",
               "Identify the speaker's gender.", "Does this voice belong to a man or a woman?",
               "Tell me the gender of the person speaking.", "Who is talking here, a male or a female speaker?",
               "Classify the speaker's gender from the voice.", "Which gender does the voice sound like?",
               "Listen to the clip and state whether the speaker is male or female.",
               "Based on the voice alone, what gender is the speaker?"],
    "pitch": ["How high or low is the speaker's pitch?", "Describe the pitch of the voice.",
              "What is the pitch level of the speaker?", "Rate the speaker's vocal pitch.",
              "How would you categorize the pitch of this voice?", "Is the voice high-pitched or low-pitched?",
              "Judge the pitch of the speech you hear.", "Which pitch category fits the speaker?",
              "Listen and tell me how high the speaker's voice is.", "Estimate the speaker's pitch."],
    "speed": ["How fast is the speaker talking?", "What is the speaking rate in this clip?",
              "Describe the speed of the speech.", "Is the person speaking quickly or slowly?",
              "Rate the tempo of the speaker's delivery.", "How would you classify the pace of this speech?",
              "Judge how rapidly the words are spoken.", "Which speaking-speed category fits this clip?",
              "Listen and tell me the speaker's pace.", "Estimate how quickly the speaker talks."],
    "volume": ["How loud is the speaker?", "What is the volume level of the speech?",
               "Describe the loudness of the voice.", "Is the speaker talking loudly or quietly?",
               "Rate the volume of this recording.", "How would you classify the loudness of the speech?",
               "Judge the speaking volume in this clip.", "Which loudness category fits the speaker?",
               "Listen and tell me how loud the voice is.", "Estimate the volume of the speaker."],
    "accent": ["What accent does the speaker have?", "Identify the speaker's accent.",
               "Which variety of English is the speaker using?", "Where does the speaker's accent come from?",
               "Classify the accent of this voice.", "What regional accent can you hear?",
               "Tell me which accent the speech is in.", "Judge the speaker's accent from the clip.",
               "Listen and name the speaker's accent.", "Which accent best describes this speaker?"],
    "language": ["What language is spoken in this clip?", "Identify the language of the speech.",
                 "Which language is the speaker using?", "In what language is this recording?",
                 "Classify the spoken language.", "Tell me the language you hear.",
                 "What is the language of the utterance?", "Which language does the speaker talk in?",
                 "Listen and name the language being spoken.", "Determine the language of the audio."],
    "duration": ["How long is this audio clip?", "What is the duration of the recording?",
                 "Describe the length of the clip.", "Is this a short or a long recording?",
                 "Rate the duration of the speech.", "How would you categorize the clip's length?",
                 "Judge how long the utterance lasts.", "Which duration category fits this audio?",
                 "Listen and tell me how long the speech goes on.", "Estimate the length of the audio."],
    "noise": ["How noisy is the recording?", "What is the level of background noise?",
              "Describe the background noise in the clip.", "Is the audio clean or noisy?",
              "Rate the amount of noise in this recording.", "How would you classify the noise level?",
              "Judge how much noise surrounds the speech.", "Which noise-level category fits this clip?",
              "Listen and tell me how much background noise there is.", "Estimate the noise level of the audio."],
    "word_count": ["How many words does the speaker say?", "Count the words spoken in the clip.",
                   "What is the number of words in this utterance?", "How many words are in the speech?",
                   "Tell me the word count of what is said.", "Count how many words you hear.",
                   "How many words long is the spoken sentence?", "Give the number of spoken words.",
                   "Listen and count the words the speaker uses.", "What is the total number of words spoken?"],
    "speaker_count": ["How many speakers are in the recording?", "Count the number of distinct voices.",
                      "How many different people are talking?", "What is the number of speakers in this clip?",
                      "Tell me how many voices you hear.", "How many people speak in the audio?",
                      "Count the speakers in this recording.", "Give the number of different speakers.",
                      "Listen and count how many people are speaking.", "How many distinct talkers are there?"],
    "content": ['Does the speaker mention the word "{word}"?', 'Is the word "{word}" said in the clip?',
                'Do you hear the word "{word}" in the speech?', 'Does "{word}" appear in what is said?',
                'Is "{word}" one of the words the speaker uses?', 'Did the speaker say "{word}"?',
                'Check whether the word "{word}" is spoken.', 'Is there any mention of "{word}" in the audio?',
                'Listen carefully: is "{word}" said?', 'Does the utterance contain the word "{word}"?'],
    "content_qa": ["What is said in the audio?", "What does the speaker say?",
                   "Tell me what the speaker is talking about.", "Summarize what is said in the clip.",
                   "Repeat the main message of the speech.", "What is the content of this recording?",
                   "What words does the speaker say?", "Describe what is being said.",
                   "What is the speaker's message?", "Restate what you hear the speaker say."],
    "transcription": ["Transcribe the audio.", "Write down exactly what is said.",
                      "Give a verbatim transcript of the speech.", "What are the exact words spoken?",
                      "Convert this speech to text.", "Produce a transcription of the clip.",
                      "Transcribe the speaker's words.", "Write out the spoken words word for word.",
                      "Please provide the transcript of this recording.", "Turn the speech into written text."],
    "describe": ["What can you hear from the audio?", "Describe the audio.",
                 "Tell me about this recording.", "What do you notice about the speaker and the speech?",
                 "Describe the speaker's voice and what they say.", "Give a description of this clip.",
                 "What can you tell me about the audio you hear?", "Describe everything you hear.",
                 "Characterize the voice and the content of this recording.", "What stands out in this audio clip?"],
    "speech": ["Is there any speech in this recording?", "Does anyone speak in this clip?",
               "Is someone talking in this audio?", "Is this audio someone talking rather than some other sound?",
               "Can you hear a human voice speaking in the clip?", "Does this recording contain spoken words?",
               "Is any person speaking in this audio?", "Listen to the clip: does it contain speech?",
               "Is there a voice saying something in this recording?",
               "Would you say this clip holds speech, as opposed to music, noise or silence?"],
    "sound": ["What kind of sound is this?", "What type of audio is this recording?",
              "Classify the sound in this clip.", "Which category does the sound in this recording belong to?",
              "Identify the kind of audio in this clip.", "What is the main sound in this audio?",
              "Which kind of sound does this clip contain?", "Listen and tell me what kind of sound this is.",
              "How would you categorize this audio?", "Is this clip speech, music, noise, a tone or silence?"],
}

# yes/no and single-word options: a one-word answer is possible.
_ONE_WORD = {"gender", "content", "speech", "sound"}
_NUMBER = {"word_count", "speaker_count"}
_OPEN = {"content_qa", "describe"}


def _c(cid: str, **kwargs) -> dict:
    return {"id": cid, "kwargs": kwargs}


def _constraint_sets(task: str) -> list[list[dict]]:
    if task in _OPEN:
        return [[_c("num_words", n=30, relation="<=")], [_c("num_sentences", n=1, relation="==")],
                [_c("num_bullets", n=3, relation="==")], [_c("title")], [_c("lowercase")],
                [_c("no_comma")], [_c("json", keys=["answer"])], [_c("ends_with", suffix="That is all.")],
                [_c("uppercase")], [_c("quoted")]]
    if task == "transcription":
        return [[_c("lowercase")], [_c("uppercase")], [_c("quoted")], [_c("json", keys=["answer"])],
                [_c("starts_with", prefix="Transcript:")], [_c("no_comma")]]
    sets = [[_c("json", keys=["answer"])], [_c("lowercase")], [_c("uppercase")], [_c("quoted")],
            [_c("starts_with", prefix="Answer:")], [_c("no_comma")],
            [_c("ends_with", suffix="That is my answer.")]]
    if task in _ONE_WORD or task in _NUMBER:
        sets.append([_c("one_word")])
    return sets


def _split(i: int) -> str:
    return "unseen" if i % 5 in (1, 3) else "seen"


def _build() -> list[Template]:
    out: list[Template] = []
    for task, phrasings in _PLAIN.items():
        classify = TASKS[task].metric == "option" and task != "content"
        bases, bare = [], []
        for i, p in enumerate(phrasings):
            bare.append(p if TASKS[task].metric == "option" else "")
            if classify:
                p = f"{p} {_OPT[i % len(_OPT)]}"
            elif task == "content":
                p = f"{p} Answer with one of: {{options}}."
            elif task in _NUMBER:
                p = f"{p} Answer with a number."
            bases.append(p)
        n = 0
        for i, text in enumerate(bases):
            n += 1
            out.append(Template(f"{task}.{n:02d}", task, text, _split(i), bare=bare[i]))
        for j, cons in enumerate(_constraint_sets(task)):
            n += 1
            # the base phrasing comes from the same split: an unseen phrasing must never sit
            # inside a seen (trained-on) constrained template
            same = [b for i, b in enumerate(bases) if _split(i) == _split(j)]
            base = same[(2 * j + 1) % len(same)]
            text = base + " " + " ".join(instruction_text(c["id"], **c["kwargs"]) for c in cons)
            out.append(Template(f"{task}.{n:02d}", task, text, _split(j), tuple(cons), "constrained"))
    return out


TEMPLATES: list[Template] = _build()
_BY_ID = {t.id: t for t in TEMPLATES}


def get_template(template_id: str) -> Template:
    """The template with this id (`<id>:bare`: its bare variant); `DataError` naming it if unknown."""
    base = template_id.removesuffix(BARE)
    try:
        template = _BY_ID[base]
    except KeyError:
        raise DataError(f"unknown template id {template_id!r}") from None
    return template.as_bare() if base != template_id else template


def templates_for(task: str | None = None, split: str | None = None, kind: str | None = None) -> list[Template]:
    """Templates filtered by task, split ("seen"/"unseen") and kind ("plain"/"constrained")."""
    if task is not None and task not in TASKS:
        raise DataError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return [t for t in TEMPLATES if (task is None or t.task == task)
            and (split is None or t.split == split) and (kind is None or t.kind == kind)]


def applicable(task: str, row: dict) -> bool:
    """Whether a row carries what `task` needs (a label, and options for option tasks)."""
    t = TASKS[task]
    if t.metric == "open":
        return True
    if t.label(row) is None:
        return False
    return t.metric != "option" or bool(t.options(row))


@functools.lru_cache(maxsize=None)
def _fields(text: str) -> frozenset:
    return frozenset(re.findall(r"\{(\w+)\}", text))


def render(template: Template, row: dict) -> str:
    """The instruction text of `template` for `row` ({options} and {word} filled)."""
    fields = _fields(template.text)
    values = {}
    if "options" in fields:
        opts = TASKS[template.task].options(row)
        if not opts:
            raise DataError(f"row {row.get('id')!r}: task {template.task!r} needs "
                            f"{TASKS[template.task].needs} to list options")
        values["options"] = ", ".join(opts)
    if "word" in fields:
        values["word"] = mention_word(row)[0]
    return template.text.format(**values) if fields else template.text
