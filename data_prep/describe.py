"""`data describe`: the DeSTA2.5-Audio seed description of each clip.

Format (DeSTA2.5-Audio's "seed description"; one timestamped segment for the clip):
    [00:00-00:03] transcript (Gender: Female, Pitch: High, Speaking speed: Fast, Volume: Normal,
    Accent: Scottish English, Duration: 3s)
Each field takes its value from the row's metadata where it is known (synthetic settings are
exact; imported labels such as gender/accent/emotion), else from the measured bins of
`data attributes` (computed here from the audio when the row has none). A field with no known
value is left out rather than guessed: a wrong attribute in the description becomes a wrong
distillation target. A missing transcript is filled by greedy Whisper decoding.
Of `data synth`'s augmentation, what a listener can hear is stated: the background-noise level
(measured, the `noise` field) and whether the room is reverberant (the `reverb` field).

A clip without speech (`meta.speech: false`, `data_prep.nonspeech`) is described in plain
sentences that say so first ("No speech. A steady high-pitched tone at about 880 Hz, 3.2
seconds, loud.") from its exact sound metadata, its level (`bins.volume`, else `meta.level_db`
on the same volume bins) and its duration; it never gets a speaker field (gender, accent, pitch,
speed) or a transcript, and is never sent to Whisper.
"""

from __future__ import annotations

import math
import sys

from data_prep import attributes as A
from data_prep.nonspeech import pitch_word
from data_prep.rows import RejectLog, audio_path, pending_rows, rebase_audio, summary
from speech_adapter.audio import load_audio
from speech_adapter.errors import AudioError, ConfigError
from speech_adapter.utils.io import JsonlAppender

FIELD_LABELS = {
    "gender": "Gender", "pitch": "Pitch", "speed": "Speaking speed", "volume": "Volume",
    "accent": "Accent", "duration": "Duration", "noise": "Background noise", "emotion": "Emotion",
    "language": "Language", "speakers": "Speakers", "age": "Age", "reverb": "Room",
}
MEASURED = ("pitch", "speed", "volume", "noise")
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch", "zh": "Chinese", "ja": "Japanese"}


def timestamp(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def _cap(v) -> str:
    v = str(v)
    return v[:1].upper() + v[1:]


def field_values(row: dict, fields: list[str]) -> dict:
    """{field: value} for the fields that are known for this row (metadata, measured bins, settings)."""
    meta = row.get("meta") or {}
    synthetic = meta.get("source") == "espeak-ng"
    from_settings = A.setting_bins(meta) if synthetic else {}
    bins = row.get("bins") or {}
    out = {}
    for f in fields:
        if f not in FIELD_LABELS:
            continue
        value = None
        if f == "gender":
            g = meta.get("gender")
            value = _cap(g) if g in ("male", "female", "mixed") else None
        elif f in MEASURED:
            # measured from the audio first: what the student can hear, and the same source the
            # eval labels (speech_adapter.templates) use; synthetic settings only fill gaps
            value = bins.get(f) or from_settings.get(f)
        elif f == "accent":
            value = meta.get("accent") or None
        elif f == "duration":
            d = row.get("duration") or (row.get("attributes") or {}).get("duration_s")
            value = f"{max(1, int(round(float(d))))}s" if d else None
        elif f == "emotion":
            value = _cap(meta["emotion"]) if meta.get("emotion") else None
        elif f == "language":
            lang = row.get("language")
            value = meta.get("language_name") or LANGUAGE_NAMES.get(str(lang), lang)
        elif f == "speakers":
            value = meta.get("speakers")
        elif f == "age":
            value = meta.get("age")
        elif f == "reverb" and "augment" in meta:
            # known only where data synth's augmentation recorded it (meta.augment); reverb is
            # audible, while the other steps (codec, band, gain) are not stated
            value = "Reverberant" if "reverb" in meta["augment"] else "Dry"
        if value not in (None, ""):
            out[f] = value
    return out


def describe_row(row: dict, fields: list[str]) -> str:
    """The seed description text of one row (needs `transcript`; duration from the row)."""
    if is_nonspeech(row):
        return describe_sound(row)
    values = field_values(row, fields)
    dur = float(row.get("duration") or (row.get("attributes") or {}).get("duration_s") or 0.0)
    inner = ", ".join(f"{FIELD_LABELS[k]}: {v}" for k, v in values.items())
    text = (row.get("transcript") or "").strip()
    return f"[00:00-{timestamp(dur)}] {text} ({inner})" if inner else f"[00:00-{timestamp(dur)}] {text}"


def is_nonspeech(row: dict) -> bool:
    """Whether the row is known to hold no speech (`meta.speech` is false)."""
    return (row.get("meta") or {}).get("speech") is False


# volume bin (attributes.BINS) -> how a listener says it of a sound
_LOUDNESS = {"Very low": "very quiet", "Low": "quiet", "Normal": "at a moderate volume", "High": "loud",
             "Very high": "very loud"}


def sound_values(row: dict) -> dict:
    """The facts a non-speech clip's description states: {speech, sound, volume, duration_s} and
    the sound's details from `meta` (noise_color, tone_hz, pattern, music_style, ...)."""
    meta = row.get("meta") or {}
    volume = (row.get("bins") or {}).get("volume")
    if not volume and meta.get("level_db") is not None:
        volume = A.bin_value("volume", meta["level_db"])
    d = row.get("duration") or (row.get("attributes") or {}).get("duration_s")
    keys = ("sound", "noise_color", "waveform", "pattern", "tone_hz", "music_style", "mode", "root_hz", "tempo_bpm",
            "animal_style", "calls")
    out = {"speech": "No", **{k: meta[k] for k in keys if meta.get(k) is not None}}
    if volume:
        out["volume"] = volume
    if d:
        out["duration_s"] = round(float(d), 1)
    return out


def _note_name(hz: float) -> str:
    names = ["C", "C sharp", "D", "E flat", "E", "F", "F sharp", "G", "A flat", "A", "B flat", "B"]
    return names[(9 + int(round(12 * math.log2(hz / 440.0)))) % 12]  # A is names[9]


def _what(v: dict) -> str:
    """The sound itself, as a noun phrase ("a steady high-pitched tone at about 880 Hz")."""
    sound = v.get("sound")
    if sound == "noise":
        texture = {"white": "a steady hiss", "pink": "a steady rushing sound", "brown": "a steady low rumble"}
        color = v.get("noise_color")
        return f"{color} noise, {texture[color]}" if color in texture else "steady noise"
    if sound == "silence":
        return "near silence: only a faint room hiss"
    if sound == "tone" and v.get("tone_hz"):
        hz = v["tone_hz"]
        kind = "tone" if v.get("waveform") != "square" else "buzzy square-wave tone"
        if v.get("pattern") != "beeps":
            return f"a steady {pitch_word(hz[0])} {kind} at about {hz[0]:.0f} Hz"
        if len(set(hz)) == 1:
            return f"a sequence of short {pitch_word(hz[0])} beeps ({kind}s) at about {hz[0]:.0f} Hz"
        return (f"a sequence of short beeps ({kind}s) at {len(set(hz))} different pitches between about "
                f"{min(hz):.0f} and {max(hz):.0f} Hz")
    if sound == "music":
        style = v.get("music_style")
        tempo = f" at about {v['tempo_bpm']} beats per minute" if v.get("tempo_bpm") else ""
        key = f" in {_note_name(v['root_hz'])} {v.get('mode', '')}".rstrip() if v.get("root_hz") else ""
        piece = {"chords": f"chords{key} played one after another",
                 "arpeggio": f"an arpeggio{key}, notes played up and down",
                 "drums": "a simple drum beat of kick, snare and hi-hat"}.get(style, "")
        return f"a short piece of synthetic music{': ' + piece if piece else ''}{tempo}"
    if sound == "animal":
        n = v.get("calls")
        if v.get("animal_style") == "birdsong":
            return f"an animal: a bird singing{f', {n} phrases' if n else ''} of short high chirps"
        if v.get("animal_style") == "call":
            return f"an animal call{f' repeated {n} times' if n else ''}: a harmonic cry like a bleat or a moo"
        return "an animal sound"
    return {"tone": "a tone"}.get(sound, "a sound that is not speech")


def describe_sound(row: dict) -> str:
    """The description of a clip without speech, e.g. "No speech. A steady high-pitched tone at
    about 880 Hz, 3.2 seconds, loud." (no speaker attributes, no transcript)."""
    v = sound_values(row)
    parts = [_what(v)]
    if "duration_s" in v:
        parts.append(f"{v['duration_s']:g} seconds")
    if v.get("volume") in _LOUDNESS:
        parts.append(_LOUDNESS[v["volume"]])
    text = ", ".join(parts)
    return f"No speech. {text[:1].upper()}{text[1:]}."


def _needs_audio(row: dict, fields: list[str]) -> bool:
    if is_nonspeech(row):  # nothing to transcribe; the level is measured only if not known
        return not row.get("bins") and (row.get("meta") or {}).get("level_db") is None
    if not (row.get("transcript") or "").strip():
        return True
    synthetic = (row.get("meta") or {}).get("source") == "espeak-ng"
    wants_measure = any(f in MEASURED for f in fields)
    return wants_measure and not synthetic and not row.get("bins")


class _Whisper:
    """Loads Whisper on first use only (rows with transcripts never pay for it)."""

    def __init__(self, ref: str, batch_size: int):
        self.ref, self.batch_size, self._parts = ref, batch_size, None

    def __call__(self, waves) -> list[str]:
        from speech_adapter.models.encoder import transcribe  # lazy: torch

        if self._parts is None:
            from speech_adapter.models.loading import load_whisper  # lazy: torch

            self._parts = load_whisper(self.ref)
        return [t.strip() for t in transcribe(*self._parts, waves, batch_size=self.batch_size)]


def run_describe(cfg, progress: bool = True, transcriber=None) -> dict:
    """`data describe`: add `description` (and `description_fields`) to every row; resumable.

    `transcriber(waveforms) -> list[str]` replaces Whisper (tests); by default Whisper from
    `cfg.whisper` is loaded only if some row lacks a transcript.
    """
    from tqdm import tqdm

    if not cfg.input or not cfg.output:
        raise ConfigError("input/output: give --input rows.jsonl and --output described.jsonl")
    unknown = [f for f in cfg.fields if f not in FIELD_LABELS]
    if unknown:
        raise ConfigError(f"fields: unknown {unknown}; choose from {list(FIELD_LABELS)}")
    transcriber = transcriber or _Whisper(cfg.whisper, cfg.batch_size)
    with RejectLog(cfg.output, "describe", cfg.strict) as rejects:
        todo, skipped = pending_rows(cfg, rejects, "describe")
        written = 0
        bar = tqdm(total=len(todo), desc="describe", unit="clip", disable=not progress, file=sys.stderr)
        with JsonlAppender(cfg.output) as out:
            for start in range(0, len(todo), cfg.batch_size):
                batch, pending = [], []  # rows in order; (index, audio) needing a transcript
                for row in todo[start:start + cfg.batch_size]:
                    row = dict(row)
                    if _needs_audio(row, cfg.fields):
                        try:
                            x = load_audio(audio_path(row, cfg.input), max_seconds=cfg.max_seconds,
                                           allow_silence=False)
                        except AudioError as e:
                            rejects.add(str(e), id=row["id"], source=str(cfg.input))
                            bar.update(1)
                            continue
                        meta = row.get("meta") or {}
                        if not row.get("bins") and not meta.get("source") == "espeak-ng":
                            attrs = A.measure(x, row.get("transcript"), speech=meta.get("speech"))
                            row["attributes"] = attrs
                            row["bins"] = A.bins_for(attrs, meta.get("gender"), speech=meta.get("speech"))
                        if not (row.get("transcript") or "").strip() and not is_nonspeech(row):
                            pending.append((len(batch), x))
                        row.setdefault("duration", round(len(x) / A.SR, 4))
                    batch.append(row)
                if pending:
                    texts = transcriber([x for _, x in pending])
                    for (i, _), text in zip(pending, texts):
                        batch[i]["transcript"] = text
                        batch[i]["transcript_source"] = "whisper"
                for row in batch:
                    nonspeech = is_nonspeech(row)
                    row["description_fields"] = sound_values(row) if nonspeech else field_values(row, cfg.fields)
                    row["description"] = describe_row(row, cfg.fields)
                    out.write(rebase_audio(row, cfg.input, cfg.output))
                    written += 1
                    bar.update(1)
        bar.close()
        line = summary("describe", written, skipped, rejects, cfg.output)
        return {"written": written, "skipped": skipped, "rejected": dict(rejects.counts),
                "summary": line}
