"""Audio loading with one policy for every entry point.

Repairs (documented, applied silently but reported in `repairs`): multi-channel audio is
downmixed to mono by averaging; any sample rate is resampled to 16 kHz (soxr via librosa);
integer and float PCM, FLAC, OGG and MP3 are decoded by libsndfile (MP3 falls back to audioread).
Clipped audio is kept and reported as a repair note ("clipped").

Refusals (raise `AudioError` naming the file and the reason): missing file, undecodable or
truncated file, zero samples, shorter than `min_seconds`, NaN/inf samples, all-silent audio
when `allow_silence` is False, and longer than `max_seconds` when one is given (callers that
accept long audio chunk it with `chunk_audio`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from speech_adapter.errors import AudioError
from speech_adapter.utils.io import atomic_path

SAMPLE_RATE = 16000
MIN_SECONDS = 0.1
SILENCE_PEAK = 1e-4  # peak |x| below this counts as silence (-80 dBFS)
CLIP_LEVEL = 0.999
CHUNK_SECONDS = 30.0  # Whisper's window; longer audio is chunked by this policy
# The longest clip accepted anywhere (data prep, training, the model; 4 Whisper windows): the one
# default of every per-clip length limit, so a clip one command takes is never refused by the next.
MAX_AUDIO_SECONDS = 120.0


def _decode(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return data, sr
    except Exception as sf_err:  # libsndfile cannot read it: try audioread (mp3 on old libs)
        try:
            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                y, sr = librosa.load(str(path), sr=None, mono=False)
            y = np.atleast_2d(y).T.astype(np.float32)
            return y, int(sr)
        except Exception:
            raise AudioError(path, f"not a readable audio file ({_short(sf_err)})") from None


def _short(err: Exception) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return msg[:160]


def load_audio(
    path,
    sr: int = SAMPLE_RATE,
    *,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float | None = None,
    allow_silence: bool = True,
    repairs: list | None = None,
) -> np.ndarray:
    """Load `path` as mono float32 at `sr` Hz, applying the module's repair/refusal policy."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    data, orig_sr = _decode(path)
    notes = [] if repairs is None else repairs
    if data.size == 0 or data.shape[0] == 0:
        raise AudioError(path, "no audio samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(path, "contains NaN or infinite samples")
    if data.shape[1] > 1:
        notes.append(f"downmixed {data.shape[1]} channels to mono")
        data = data.mean(axis=1)
    else:
        data = data[:, 0]
    if orig_sr <= 0:
        raise AudioError(path, f"invalid sample rate {orig_sr}")
    if np.max(np.abs(data)) >= CLIP_LEVEL:
        notes.append("clipped")
    if orig_sr != sr:
        import librosa

        data = librosa.resample(data, orig_sr=orig_sr, target_sr=sr, res_type="soxr_hq")
        notes.append(f"resampled {orig_sr} Hz to {sr} Hz")
    data = np.ascontiguousarray(data, dtype=np.float32)
    seconds = len(data) / sr
    if seconds < min_seconds:
        raise AudioError(path, f"too short ({seconds:.3f} s < {min_seconds} s)")
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(path, f"too long ({seconds:.1f} s > {max_seconds} s); chunk it first")
    if not allow_silence and float(np.max(np.abs(data))) < SILENCE_PEAK:
        raise AudioError(path, "silent (peak below -80 dBFS)")
    return data


def chunk_audio(samples: np.ndarray, sr: int = SAMPLE_RATE, seconds: float = CHUNK_SECONDS) -> list[np.ndarray]:
    """Split audio into consecutive chunks of at most `seconds` (the long-audio policy)."""
    step = int(seconds * sr)
    return [samples[i : i + step] for i in range(0, max(len(samples), 1), step)]


def save_wav(path, samples: np.ndarray, sr: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    """Write a WAV atomically (temp file renamed into place).

    The file is encoded in memory and written by Python, so a full or read-only disk raises an
    `OSError` naming the file (libsndfile's own writer reports only "System error.").
    """
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype=subtype)
    with atomic_path(path, suffix=".wav") as tmp:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
