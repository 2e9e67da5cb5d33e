"""The one table of bad inputs the reliability suite tries (docs/RELIABILITY.md lists the outcomes).

`AUDIO_CASES` maps a case name to (writer, outcome). A writer makes the file under a directory
and returns its path; the outcome is what the shared policy (speech_adapter/audio.py) must do:
("reject", reason substring) or ("repair", note substring, "" when nothing needs repair).
Entry points differ only where their callers document it (data commands also refuse silence and
audio over 60 s; train refuses over 30 s; chat/infer/eval chunk long audio) — see `expected`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from speech_adapter.audio import MAX_AUDIO_SECONDS

SR = 16000


def tone(seconds: float, sr: int = SR, amp: float = 0.3, f0: float = 220.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(int(seconds * 1000) + sr)
    return (amp * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _w(name, data, sr=SR, subtype=None, fmt=None):
    def write(root: Path) -> Path:
        p = root / name
        sf.write(str(p), data() if callable(data) else data, sr, subtype=subtype, format=fmt)
        return p
    return write


def _bytes(name, make):
    def write(root: Path) -> Path:
        p = root / name
        p.write_bytes(make())
        return p
    return write


def _good_wav_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, tone(1.0), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _nan() -> np.ndarray:
    x = tone(1.0)
    x[100] = np.nan
    return x


def _inf() -> np.ndarray:
    x = tone(1.0)
    x[100] = np.inf
    return x


def _missing(root: Path) -> Path:
    return root / "never_written.wav"


def _directory(root: Path) -> Path:
    p = root / "a_dir.wav"
    p.mkdir(exist_ok=True)
    return p


# name -> (writer, base outcome under load_audio's default policy)
AUDIO_CASES: dict[str, tuple] = {
    "zero_length_wav": (_w("zero.wav", np.zeros(0, np.float32)), ("reject", "no audio samples")),
    "zero_byte_file": (_bytes("empty.wav", lambda: b""), ("reject", "empty file (0 bytes)")),
    "one_sample": (_w("one.wav", np.array([0.1], np.float32)), ("reject", "too short")),
    "nan_samples": (_w("nan.wav", _nan, subtype="FLOAT"), ("reject", "NaN or infinite")),
    "inf_samples": (_w("inf.wav", _inf, subtype="FLOAT"), ("reject", "NaN or infinite")),
    "silence": (_w("silence.wav", np.zeros(SR, np.float32)), ("repair", "")),
    "clipping": (_w("clip.wav", lambda: np.clip(tone(1.0, amp=3.0), -1, 1)), ("repair", "clipped")),
    "sr_8000": (_w("sr8k.wav", lambda: tone(1.0, 8000), 8000), ("repair", "resampled 8000 Hz")),
    "sr_22050": (_w("sr22k.wav", lambda: tone(1.0, 22050), 22050), ("repair", "resampled 22050 Hz")),
    "sr_44100": (_w("sr44k.wav", lambda: tone(1.0, 44100), 44100), ("repair", "resampled 44100 Hz")),
    "sr_48000": (_w("sr48k.wav", lambda: tone(1.0, 48000), 48000), ("repair", "resampled 48000 Hz")),
    "stereo": (_w("stereo.wav", lambda: np.stack([tone(1.0), tone(1.0, f0=330)], 1)), ("repair", "downmixed 2")),
    "pcm24_wav": (_w("pcm24.wav", lambda: tone(1.0), subtype="PCM_24"), ("repair", "")),
    "float_wav": (_w("float.wav", lambda: tone(1.0), subtype="FLOAT"), ("repair", "")),
    "flac": (_w("clip.flac", lambda: tone(1.0), fmt="FLAC"), ("repair", "")),
    "ogg_vorbis": (_w("clip.ogg", lambda: tone(1.0), fmt="OGG", subtype="VORBIS"), ("repair", "")),
    "mp3": (_w("clip.mp3", lambda: tone(1.0), fmt="MP3", subtype="MPEG_LAYER_III"), ("repair", "")),
    "truncated_header": (_bytes("trunc_head.wav", lambda: _good_wav_bytes()[:20]), ("reject", "not a readable audio file")),
    "corrupt_header": (_bytes("corrupt.wav", lambda: b"JUNK" + _good_wav_bytes()[4:]), ("reject", "not a readable audio file")),
    "truncated_data": (_bytes("trunc_data.wav", lambda: _good_wav_bytes()[:44 + 8000]), ("repair", "")),
    "text_named_wav": (_bytes("notes.wav", lambda: b"this is a text file, not audio\n" * 20), ("reject", "not a readable audio file")),
    "missing_file": (_missing, ("reject", "file not found")),
    "directory": (_directory, ("reject", "is a directory")),
    "ten_minutes": (_w("long10min.wav", lambda: tone(600.0), subtype="PCM_16"), ("repair", "")),
}

# Entry-point policies that differ from load_audio's default (documented in their modules).
DATA_CMDS = ("import", "attributes", "describe")


def expected(entry: str, case: str) -> tuple:
    """The outcome `case` must have at `entry` (see the module docstring)."""
    outcome = AUDIO_CASES[case][1]
    if case == "silence" and entry in DATA_CMDS:
        return ("reject", "silent")
    if case == "ten_minutes":
        if entry in DATA_CMDS:
            return ("reject", f"too long (600.0 s > {MAX_AUDIO_SECONDS} s)")
        if entry == "train":
            return ("reject", f"too long (600.0 s > {MAX_AUDIO_SECONDS} s)")
        if entry == "eval":
            return ("reject", "too long")
        return ("repair", "chunked")
    return outcome


def write_all(root: Path) -> dict[str, Path]:
    """Write every audio case under `root`; {case: path}."""
    root.mkdir(parents=True, exist_ok=True)
    return {name: writer(root) for name, (writer, _) in AUDIO_CASES.items()}
