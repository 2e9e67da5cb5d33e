"""Non-speech clips for `data synth`: noise, tones, near-silence and synthetic music (numpy only).

A model that has heard only speech describes every sound as a speaker. A share of
the synthetic corpus (`SynthConfig.nonspeech_fraction`) is therefore sound without speech, with
metadata exact by construction, so the `speech`/`sound` questions and the descriptions of these
clips are true (the AudioSet ontology's top classes guided the kinds; the renderers are textbook
signal generation: 1/f^k noise, band-limited square waves by odd harmonics, ADSR envelopes):

- `noise`: white / pink / brown noise, steady, at a drawn level;
- `tone`: a steady sine or square tone, or a sequence of beeps, at musical pitches;
- `silence`: room tone (quiet pink/brown noise) far below any speech level;
- `music`: chords, an arpeggio, or a drum pattern (enveloped noise bursts and a kick);
- `animal` (not in the default mix, `SynthConfig.nonspeech_sounds`): birdsong (phrases of short,
  nearly pure chirps sweeping through 2-7 kHz) or a mammal's call (a harmonic cry at 150-700 Hz
  with vibrato and a falling pitch, like a bleat or a moo), repeated with pauses.

Rows: `transcript: ""`, `language: None`, `meta.speech: False`, `meta.speakers: 0`,
`meta.sound` (one of SOUNDS) and its details (`noise_color`, `tone_hz`, `waveform`, `pattern`,
`music_style`, `tempo_bpm`, `animal_style`, `calls`). `meta.level_db` is the clip's RMS level in dBFS measured on the
rendered audio (10*log10 mean x^2), so it is what `attributes` reads back. A clip's plan is a
pure function of (config, index) like a speech clip's: `plan(cfg, index, rng)` draws everything,
`render(plan, sr)` makes the audio.
"""

from __future__ import annotations

import math
import re

import numpy as np

from data_prep.augment import colored_noise

SOUNDS = ("noise", "tone", "silence", "music", "animal")
DURATION_S = (1.5, 8.0)  # like the speech clips
LEVEL_DB = (-42.0, -14.0)  # RMS dBFS of noise, tone and music clips (speech sits around -35..-15)
ROOM_TONE_DB = (-70.0, -56.0)  # near-silence: audible only as a faint hiss
PEAK = 0.95  # a clip louder than this at its drawn level is scaled down (level_db is measured after)
# equal-tempered pitches from A2 to A6 (110-1760 Hz) plus two test-tone favourites
NOTES_HZ = [round(440.0 * 2 ** (k / 12), 2) for k in range(-24, 25, 3)] + [1000.0, 3000.0]
SQUARE_MAX_HZ = 1200.0  # square waves only below this: at 16 kHz they keep 3+ harmonics, so sound square
TONE_PITCH_WORDS = ((250.0, "low-pitched"), (600.0, "mid-pitched"), (math.inf, "high-pitched"))
MUSIC_STYLES = ("chords", "arpeggio", "drums")
ANIMAL_STYLES = ("birdsong", "call")
CHIRP_HZ = (2000.0, 7000.0)  # a songbird's band (a robin sings ~2-6 kHz)
CALL_HZ = (150.0, 700.0)  # the fundamental of a bleat, a moo or a bark-like cry
FADE_S = 0.02  # raised-cosine fade at every start/stop, so no click is mistaken for an onset


def plan(sounds: list[str], index: int, seed: int, rng: np.random.Generator) -> dict:
    """Everything about one non-speech clip except its audio (JSON-able `meta` included)."""
    sound = str(sounds[int(rng.integers(len(sounds)))])
    duration = round(float(rng.uniform(*DURATION_S)), 2)
    level = round(float(rng.uniform(*LEVEL_DB)), 1)
    meta: dict = {"speech": False, "sound": sound, "speakers": 0, "seed": seed, "source": "synthetic"}
    if sound in ("noise", "silence"):
        colors = ("white", "pink", "brown") if sound == "noise" else ("pink", "brown")
        meta["noise_color"] = str(colors[int(rng.integers(len(colors)))])
        if sound == "silence":
            level = round(float(rng.uniform(*ROOM_TONE_DB)), 1)
    elif sound == "tone":
        meta["waveform"] = "sine" if rng.random() < 0.6 else "square"
        if rng.random() < 0.5:
            meta["pattern"] = "steady"
            meta["tone_hz"] = [NOTES_HZ[int(rng.integers(len(NOTES_HZ)))]]
        else:
            meta["pattern"] = "beeps"
            n = int(rng.integers(2, 5))  # distinct pitches in the sequence
            meta["tone_hz"] = [NOTES_HZ[int(i)] for i in rng.choice(len(NOTES_HZ), n, replace=False)]
            meta["beep_s"] = round(float(rng.uniform(0.12, 0.5)), 3)
            meta["gap_s"] = round(float(rng.uniform(0.05, 0.4)), 3)
        if max(meta["tone_hz"]) > SQUARE_MAX_HZ:
            meta["waveform"] = "sine"  # its harmonics would be above Nyquist: it would sound like one
    elif sound == "animal":
        style = str(ANIMAL_STYLES[int(rng.integers(len(ANIMAL_STYLES)))])
        meta["animal_style"] = style
        meta["calls"] = int(rng.integers(2, 6)) if style == "call" else int(rng.integers(2, 5))  # calls / phrases
    else:
        style = str(MUSIC_STYLES[int(rng.integers(len(MUSIC_STYLES)))])
        meta["music_style"] = style
        meta["tempo_bpm"] = int(rng.integers(70, 161))
        if style != "drums":
            meta["root_hz"] = NOTES_HZ[int(rng.integers(2, 12))]  # 131-523 Hz: the chord roots
            meta["mode"] = "major" if rng.random() < 0.5 else "minor"
    return {"index": index, "language": None, "transcript": "", "duration_s": duration, "level_db": level,
            "render_seed": int(rng.integers(2**31)), "meta": meta}


def render(p: dict, sr: int) -> np.ndarray:
    """The clip of plan `p` at `sr` (float32 mono, peak <= PEAK); sets `meta.level_db` measured."""
    m = p["meta"]
    n = int(round(p["duration_s"] * sr))
    rng = np.random.default_rng(p["render_seed"])
    if m["sound"] in ("noise", "silence"):
        x = colored_noise(n, m["noise_color"], rng).astype(np.float64)
        x *= _fade(n, sr, FADE_S * 5)
    elif m["sound"] == "tone":
        x = _tones(m, n, sr)
    elif m["sound"] == "animal":
        x = (_birdsong if m["animal_style"] == "birdsong" else _calls)(m["calls"], n, sr, rng)
        x = x + 10 ** (-30 / 20) * colored_noise(n, "pink", rng) * math.sqrt(float(np.mean(x ** 2)) + 1e-12)
    else:
        x = {"chords": _chords, "arpeggio": _arpeggio, "drums": _drums}[m["music_style"]](m, n, sr, rng)
    rms = math.sqrt(float(np.mean(x ** 2))) if n else 0.0
    if rms > 0:
        x *= 10 ** (p["level_db"] / 20) / rms
    peak = float(np.max(np.abs(x))) if n else 0.0
    if peak > PEAK:
        x *= PEAK / peak
    m["level_db"] = level_dbfs(x)
    return x.astype(np.float32)


def level_dbfs(x: np.ndarray) -> float:
    """RMS level in dBFS, rounded to 0.1 dB (the definition of `meta.level_db`)."""
    return round(10 * math.log10(float(np.mean(np.asarray(x, np.float64) ** 2)) + 1e-12), 1)


def _fade(n: int, sr: int, seconds: float = FADE_S) -> np.ndarray:
    """(n,) gain rising from 0 and falling back to 0 over `seconds` at each end (raised cosine)."""
    k = min(int(seconds * sr), n // 2)
    g = np.ones(n)
    if k:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
        g[:k], g[n - k:] = ramp, ramp[::-1]
    return g


def _wave(hz: float, n: int, sr: int, waveform: str) -> np.ndarray:
    """(n,) unit-amplitude sine, or a square band-limited to below Nyquist (odd harmonics 1/k)."""
    t = np.arange(n) / sr
    if waveform == "sine":
        return np.sin(2 * np.pi * hz * t)
    ks = np.arange(1, int(sr / 2 / hz) + 1, 2)  # odd harmonics under Nyquist
    return (4 / np.pi) * sum(np.sin(2 * np.pi * k * hz * t) / k for k in ks)


def _tones(m: dict, n: int, sr: int) -> np.ndarray:
    if m["pattern"] == "steady":
        return _wave(m["tone_hz"][0], n, sr, m["waveform"]) * _fade(n, sr)
    x = np.zeros(n)
    beep, step = int(m["beep_s"] * sr), int((m["beep_s"] + m["gap_s"]) * sr)
    for j, start in enumerate(range(0, max(n - beep, 1), step)):
        length = min(beep, n - start)
        hz = m["tone_hz"][j % len(m["tone_hz"])]
        x[start:start + length] = _wave(hz, length, sr, m["waveform"]) * _fade(length, sr)
    return x


def _note(hz: float, n: int, sr: int, decay_s: float) -> np.ndarray:
    """(n,) a plucked/organ-like note: three harmonics, fast attack, exponential decay."""
    t = np.arange(n) / sr
    tone = np.sin(2 * np.pi * hz * t) + 0.4 * np.sin(4 * np.pi * hz * t) + 0.15 * np.sin(6 * np.pi * hz * t)
    return tone * np.exp(-t / decay_s) * _fade(n, sr, 0.005)


def _triad(m: dict) -> list[float]:
    third = 4 if m["mode"] == "major" else 3
    return [m["root_hz"] * 2 ** (s / 12) for s in (0, third, 7)]


def _chords(m: dict, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A chord every two beats, cycling I-IV-V-I of the key (in the drawn mode)."""
    x = np.zeros(n)
    hold = int(2 * 60 / m["tempo_bpm"] * sr)
    for j, start in enumerate(range(0, n, hold)):
        shift = (0, 5, 7, 0)[j % 4]
        length = min(hold, n - start)
        for hz in _triad(m):
            x[start:start + length] += _note(hz * 2 ** (shift / 12), length, sr, decay_s=0.8)
    return x


def _arpeggio(m: dict, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The triad and its octave played up and down, one note per half beat."""
    notes = _triad(m) + [2 * m["root_hz"]]
    order = notes + notes[-2:0:-1]
    x = np.zeros(n)
    step = int(60 / m["tempo_bpm"] / 2 * sr)
    for j, start in enumerate(range(0, n, step)):
        length = min(step, n - start)
        x[start:start + length] = _note(order[j % len(order)], length, sr, decay_s=0.25)
    return x


def _drums(m: dict, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A rock beat in eighth notes: kick on 1 and 3, snare on 2 and 4, hi-hat on every eighth."""
    x = np.zeros(n)
    eighth = int(60 / m["tempo_bpm"] / 2 * sr)
    for j, start in enumerate(range(0, n, eighth)):
        hits = ["hat"] + (["kick"] if j % 4 == 0 else ["snare"] if j % 4 == 2 else [])
        for hit in hits:
            burst = _drum(hit, min(int(0.25 * sr), n - start), sr, rng)
            x[start:start + len(burst)] += burst
    return x


def _drum(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) one enveloped hit: a falling sine (kick), noise with a body (snare), bright noise (hat)."""
    t = np.arange(n) / sr
    if kind == "kick":
        hz = 50 + 70 * np.exp(-t / 0.03)  # pitch falls 120 -> 50 Hz
        return 1.5 * np.sin(2 * np.pi * np.cumsum(hz) / sr) * np.exp(-t / 0.12)
    noise = rng.standard_normal(n)
    if kind == "snare":
        return (0.8 * noise + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.06)
    bright = np.diff(noise, prepend=0.0)  # first difference: a crude high-pass
    return 0.3 * bright * np.exp(-t / 0.015)


def _slots(count: int, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """`count` (start, length) spans spread over n samples, each up to a share of it, with pauses."""
    share = n // max(count, 1)
    spans = []
    for j in range(count):
        length = int(share * rng.uniform(0.45, 0.75))
        start = j * share + int((share - length) * rng.uniform(0.2, 0.8))
        spans.append((start, length))
    return spans


def _sweep(f0: np.ndarray, sr: int, harmonics: list[float]) -> np.ndarray:
    """A tone following the frequency contour `f0` (Hz per sample), with the given harmonic gains."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    return sum(g * np.sin((k + 1) * phase) for k, g in enumerate(harmonics) if g)


def _birdsong(phrases: int, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Phrases of 3-8 chirps, each 30-150 ms sweeping up, down or up-and-down in 2-7 kHz."""
    x = np.zeros(n)
    for start, length in _slots(phrases, n, rng):
        chirps = int(rng.integers(3, 9))
        step = length // chirps
        for c in range(chirps):
            k = min(int(sr * rng.uniform(0.03, 0.15)), step)
            if k < 8:
                continue
            lo, hi = sorted(rng.uniform(*CHIRP_HZ, size=2))
            u = np.linspace(0, 1, k)
            shape = int(rng.integers(3))
            curve = u if shape == 0 else 1 - u if shape == 1 else np.sin(np.pi * u)
            f0 = np.minimum(lo + (hi - lo) * curve, sr / 2 * 0.9)
            at = start + c * step
            x[at:at + k] += _sweep(f0, sr, [1.0, 0.15]) * np.sin(np.pi * u) ** 2
    return x


def _calls(calls: int, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """`calls` harmonic cries (0.3-1.2 s): a falling pitch with 5-8 Hz vibrato, a breathy edge."""
    x = np.zeros(n)
    base = rng.uniform(*CALL_HZ)
    harmonics = [1.0 / (k + 1) ** rng.uniform(0.6, 1.2) for k in range(10)]
    for start, length in _slots(calls, n, rng):
        k = min(length, int(sr * rng.uniform(0.3, 1.2)))
        if k < 16:
            continue
        t = np.arange(k) / sr
        f0 = base * (1.15 - 0.3 * t / t[-1]) * (1 + 0.04 * np.sin(2 * np.pi * rng.uniform(5, 8) * t))
        harm = [g if (j + 1) * f0.max() < sr / 2 * 0.9 else 0.0 for j, g in enumerate(harmonics)]
        cry = _sweep(f0, sr, harm) + 0.05 * rng.standard_normal(k)
        x[start:start + k] += cry * _fade(k, sr, 0.06)
    return x


def pitch_word(hz: float) -> str:
    """The pitch word of a tone at `hz`: low-, mid- or high-pitched."""
    return next(word for edge, word in TONE_PITCH_WORDS if hz < edge)


# ---------------------------------------------------------------- what an answer may say about one

# words that name each kind of sound (a describe answer must name its clip's kind or say there is
# no speech); the teacher reads the description of `data_prep.describe.describe_sound`
SOUND_WORDS = {
    "noise": {"noise", "noisy", "hiss", "hissing", "static", "rumble", "rumbling", "rushing"},
    "tone": {"tone", "tones", "beep", "beeps", "beeping", "hum", "whistle", "sine", "square"},
    "silence": {"silence", "silent", "quiet", "hiss", "nothing"},
    "music": {"music", "musical", "melody", "chord", "chords", "arpeggio", "drum", "drums", "beat", "rhythm",
              "notes", "instrument", "instrumental"},
    "animal": {"animal", "animals", "bird", "birds", "birdsong", "chirp", "chirps", "chirping", "tweet",
               "tweeting", "call", "calls", "cry", "cries", "bleat", "bleating", "moo", "mooing"},
}
_NO_SPEECH = re.compile(r"\b(no|not|without|non|nor|never)[- ](\w+ ){0,2}?(speech|speaking|talking|voices?|words|"
                        r"speakers?|one|body)\b|\bnobody\b|\bno-one\b", re.IGNORECASE)
_PERSON = {"he", "she", "his", "her", "him", "hers", "man", "woman", "men", "women", "lady", "gentleman", "boy",
           "girl", "male", "female"}
_SPEAKING = re.compile(r"(?<!no )\b(the speaker|someone|somebody|a person|a voice)\s+(is\s+)?(says|said|saying|speaks|"
                       r"speaking|talks|talking)\b", re.IGNORECASE)


def grounding_reason(answer: str, meta: dict) -> str | None:
    """An open answer about a clip without speech must say so or name its sound; None when it does."""
    words = set(re.findall(r"[a-z]+", answer.lower()))
    if _NO_SPEECH.search(answer) or words & SOUND_WORDS.get(meta.get("sound"), set()):
        return None
    return f"not about the clip (says neither that there is no speech nor that it is {meta.get('sound', 'a sound')})"


def speaker_claim_reason(answer: str) -> str | None:
    """A speaker claimed in a clip without speech ("a woman says ..."), or None."""
    person = sorted(set(re.findall(r"[a-z]+", answer.lower())) & _PERSON)
    if person:
        return f"claims a speaker in a clip without speech ({', '.join(person)})"
    m = _SPEAKING.search(answer)
    return f"claims a speaker in a clip without speech ({m.group(0)!r})" if m else None


_DENIAL = re.compile(r"\b(no|without( any)?) speech\b|\bnon-speech\b|\b(no one|nobody) (is )?(speaking|talking)\b",
                     re.IGNORECASE)


def speech_denial_reason(answer: str, transcript: str | None = None) -> str | None:
    """A claim of no speech about a clip with speech (outside its transcript's words), or None."""
    outside = answer
    if transcript:
        outside = re.sub(re.escape(transcript.strip()), " ", outside, flags=re.IGNORECASE)
    m = _DENIAL.search(outside)
    return f"denies the speech in the clip ({m.group(0)!r})" if m else None
