"""Prompt formats shared by the teacher (text-only backbone) and the student (speech model).

DeSTA2 / DeSTA2.5-Audio: the frozen LLM reads a seed description of the clip where the speech
model will later hear the audio, and its answer becomes the training target. Two things matter:

- the teacher must answer *as a listener* ("The speaker sounds female"), never as a reader ("the
  description says ..."), or the student learns to talk about a text it never sees;
- teacher and student see the same layout, the audio slot (description or placeholder) first,
  then the instruction, so the only thing the adapter must supply is what the slot holds.

A small teacher (SmolLM2-135M) follows a plain "Gender: Female" poorly, so the "listener" style
rewrites the DeSTA2.5 seed `[00:00-00:03] words (Gender: Female, Pitch: High, ...)` into short
sentences about what was heard. The "naive" style (the raw seed, DeSTA2's layout) is kept for
A/B measurement (`data distill --prompt-style naive`).
"""

from __future__ import annotations

import re

# decoding: Qwen2.5's own generation config; > 1 ends a small LLM's greedy loops ("Female, Female,
# ...") and, applied to the reply's tokens only, leaves the prompt's words (a transcript) free to copy
REPETITION_PENALTY = 1.1

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant who can hear audio. You listened to the audio clip yourself: "
    "answer about what you heard, in your own words, as a listener.")

_SEED = re.compile(r"^\s*\[(?P<span>[\d:.]+\s*-\s*[\d:.]+)\]\s*(?P<words>.*?)\s*\((?P<attrs>[^()]*)\)\s*$",
                   re.DOTALL)


def parse_description(description: str) -> tuple[str, dict[str, str]] | None:
    """(spoken words, {attribute: value}) of a DeSTA2.5 seed line, or None if it is not one."""
    m = _SEED.match(description or "")
    if not m:
        return None
    attrs = {}
    for part in m.group("attrs").split(","):
        if ":" in part:
            key, value = part.split(":", 1)
            attrs[key.strip().lower()] = value.strip()
    return m.group("words").strip(), attrs


def _listener_text(description: str) -> str:
    """The seed rewritten as what a listener noticed, in the first person, so that an answer
    copying it still speaks as a listener; unknown layouts pass through unchanged."""
    parsed = parse_description(description)
    if parsed is None:
        return f"What I heard: {description.strip()}"
    words, attrs = parsed
    gender = (attrs.pop("gender", "") or "").lower()
    # "male"/"female" said outright beside "man"/"woman": given only "a man", the 0.5B backbone
    # answers "Is the speaker male or female?" with "female" for 5 of 10 men (20 of 20 right with both)
    person, pron = {"female": ("a female speaker, a woman,", "Her"),
                    "male": ("a male speaker, a man,", "His")}.get(gender, ("someone", "The"))
    # said outright: without it the 0.5B teacher answers "Is there any speech?" with "No" for
    # most spoken clips (a clip without speech has its own "No speech." description)
    lines = ["This clip is speech: there is a person talking.",
             f'I heard {person} say: "{words}"' if words else f"I heard {person.rstrip(',')}, but no clear words."]
    voice = []
    if "pitch" in attrs:
        voice.append(f"{attrs.pop('pitch').lower()} pitch")
    if "speaking speed" in attrs:
        voice.append(f"{attrs.pop('speaking speed').lower()} speaking speed")
    if "volume" in attrs:
        voice.append(f"{attrs.pop('volume').lower()} volume")
    if voice:
        listed = voice[0] if len(voice) == 1 else f"{', '.join(voice[:-1])} and {voice[-1]}"
        lines.append(f"{pron} voice has {listed}.")
    if "accent" in attrs:
        lines.append(f"The accent is {attrs.pop('accent')}.")
    if "duration" in attrs:
        lines.append(f"The clip lasts {attrs.pop('duration').replace('s', ' seconds')}.")
    for key, value in attrs.items():
        lines.append(f"The {key} is {value.lower()}.")
    return "\n".join(lines)


def teacher_user_message(description: str, instruction: str, style: str = "listener") -> str:
    """What the text-only backbone reads: the clip's description in the audio slot, then the
    instruction. `style`: "listener" (default, rewritten seed) or "naive" (the raw seed)."""
    if style == "naive":
        return f"{description.strip()}\n\n{instruction}"
    if style != "listener":
        raise ValueError(f"unknown teacher prompt style {style!r}; use 'listener' or 'naive'")
    return f"[Audio]\n{_listener_text(description)}\n\n{instruction}"


def chat_messages(system: str | None, user: str) -> list[dict]:
    """One chat turn: the system prompt (left out when None or empty), then the user's message."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def teacher_messages(description: str, instruction: str, system: str | None = DEFAULT_SYSTEM_PROMPT,
                     style: str = "listener") -> list[dict]:
    """The teacher's prompt, the one place it is built: distillation asks it, the eval's
    text_ceiling mode asks the backbone the same way (`teacher_user_message` for `style`)."""
    return chat_messages(system, teacher_user_message(description, instruction, style))


# How the speech prompt carries Whisper's transcript (`ModelConfig.transcript_line`). The default
# quotes the words as heard; the frozen LLM copies a quote when asked to transcribe. The cascade's
# line, CASCADE_TRANSCRIPT_LINE, was tried for the standard model (session 12, README): IF went
# from 68.8 to 75.0 % but transcription WER from 23.2 to 62.5 % on held-out clips and from 64 to
# 333 % on real ones ("Transcribe" answered "I'm sorry, but I can't help you with that."), as the
# cascade's own 241 / 490 %. Adapters saved before the option existed read LEGACY_TRANSCRIPT_LINE.
TRANSCRIPT_LINE = 'I heard someone say: "{transcript}"'
LEGACY_TRANSCRIPT_LINE = TRANSCRIPT_LINE
CASCADE_TRANSCRIPT_LINE = "Transcript of the audio: {transcript}"


# model.voice_line's `{person}`: the words the teacher's description uses for the speaker
# (`_listener_text`), which the backbone follows where a bare "male" after the transcript loses to its
# "female" habit (text only, 10 gender phrasings with and without the option list: men 18 of 20 with
# 'I heard a male speaker, a man, say: "..."', 13 of 20 with "The speaker's voice is male.", README
# session 32)
VOICE_PERSON = {"male": "a male speaker, a man,", "female": "a female speaker, a woman,"}


def voice_text(voice_line: str, voice: str, transcript: str | None = None) -> str:
    """`voice_line` filled in: `{voice}` the word ("male"/"female"), `{person}` the teacher's words
    for that speaker (VOICE_PERSON), `{transcript}` Whisper's words."""
    return (voice_line.replace("{voice}", voice).replace("{person}", VOICE_PERSON.get(voice, voice))
            .replace("{transcript}", transcript or ""))


def student_user_message(instruction: str, placeholder: str, transcript: str | None = None,
                         transcript_line: str = TRANSCRIPT_LINE, voice: str | None = None,
                         voice_line: str | None = None) -> str:
    """What the speech model reads: `placeholder` (expanded to audio embeddings) in the audio
    slot, optionally the Whisper transcript after it (laid out by `transcript_line`) and the
    voice in words (`voice_line` with `voice`, e.g. "male"; `ModelConfig.voice_line`), then the
    instruction. A `voice_line` holding `{transcript}` takes the transcript line's place where
    there is a voice (e.g. 'I heard {person} say: "{transcript}"')."""
    lines = [placeholder]
    merged = voice is not None and voice_line is not None and "{transcript}" in voice_line
    if transcript is not None and not merged:
        lines.append(transcript_line.replace("{transcript}", transcript))
    if voice is not None and voice_line is not None:
        lines.append(voice_text(voice_line, voice, transcript))
    audio = "\n".join(lines)
    return f"[Audio]\n{audio}\n\n{instruction}"


def cascade_user_message(transcript: str, instruction: str) -> str:
    """What the backbone reads in the cascade baseline (ASR → LLM): Whisper's transcript of the
    clip in the audio slot, laid out like `teacher_user_message`, then the instruction."""
    heard = (transcript or "").strip() or "(nothing intelligible)"
    return f"[Audio]\nTranscript of the audio: {heard}\n\n{instruction}"
