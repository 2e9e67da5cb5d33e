"""Kokoro-82M speech through `kokoro-onnx` (onnxruntime): the synthesis call `data synth` uses.

The prepared model and voices come from `speech_adapter.offline_models.kokoro`. A speaker is
either a voice id or a style array (510, 1, 256): `mix_voices` makes a new speaker as the
weighted sum of two voices' style vectors (kokoro-onnx takes the array in place of a name).
Kokoro speaks at 24 kHz and has no pitch control (speed only); output is resampled with soxr.
The session is built on first use, never at import, with a fixed number of threads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.attributes import SR, estimate_pitch
from speech_adapter.errors import ConfigError, ModelNotFoundError, SpeechAdapterError
from speech_adapter.offline_models import kokoro as K

SPEED_RANGE = (0.5, 2.0)  # what kokoro-onnx accepts


def mix_voices(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """A new speaker: weight * a + (1 - weight) * b, both (510, 1, 256) style tables."""
    return (weight * a + (1.0 - weight) * b).astype(np.float32)  # (510, 1, 256)


def engine_version() -> str:
    """Identifies what made the audio (for the synthesis cache key)."""
    import importlib.metadata

    versions = []
    for dist in ("kokoro-onnx", "onnxruntime", "espeakng-loader"):
        try:
            versions.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist}==?")
    return f"kokoro-82m:{K.JOINED_SHA256[:16]};" + ";".join(versions)


class KokoroEngine:
    """The Kokoro model of a prepared dir, loaded on first `speak`."""

    def __init__(self, directory: Path | None = None, threads: int = 1):
        self.directory = Path(directory or K.model_dir())
        self.threads = threads
        self._tts = None
        self._voices: dict[str, np.ndarray] | None = None

    @property
    def voices(self) -> dict[str, np.ndarray]:
        if self._voices is None:
            self._voices = K.load_voices(self.directory)
        return self._voices

    def _load(self):
        if self._tts is None:
            try:
                import onnxruntime as rt
                from kokoro_onnx import Kokoro
            except ImportError:
                raise SpeechAdapterError("the Kokoro engine needs onnxruntime and kokoro-onnx; run: "
                                         "pip install -e '.[kokoro]' (or bash scripts/setup.sh)") from None
            opts = rt.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            session = rt.InferenceSession(str(K.model_path(self.directory)), sess_options=opts,
                                          providers=["CPUExecutionProvider"])
            self._tts = Kokoro.from_session(session, str(self.directory / K.VOICES_FILE))
        return self._tts

    def speak(self, text: str, voice: str | np.ndarray, speed: float = 1.0, lang: str | None = None,
              sampling_rate: int = K.SAMPLE_RATE) -> np.ndarray:
        """float32 mono samples at `sampling_rate` (not peak-normalized).

        `voice` is a voice id (its accent picks `lang` when not given) or a (510, 1, 256) style
        array (then `lang` is required). Raises `ConfigError` for an unknown voice or speed.
        """
        if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise ConfigError(f"kokoro speed {speed} is outside {SPEED_RANGE[0]}..{SPEED_RANGE[1]}")
        if isinstance(voice, str):
            if voice not in K.VOICES:
                raise ConfigError(f"unknown Kokoro voice {voice!r}; English voices: {', '.join(K.VOICES)}")
            lang = lang or K.VOICES[voice].lang
            voice = self.voices[voice]
        if lang is None:
            raise ConfigError("kokoro: a style array needs lang ('en-us' or 'en-gb')")
        audio, sr = self._load().create(text, voice=np.asarray(voice, np.float32), speed=float(speed), lang=lang)
        audio = np.asarray(audio, np.float32)  # (T,) at 24 kHz
        if sampling_rate != sr:
            import soxr

            audio = soxr.resample(audio, sr, sampling_rate, quality="HQ").astype(np.float32)
        return audio


def verify_kokoro(weights: Path, out_dir: Path) -> dict:
    """Speak one sentence with a US female and a US male voice: the female's F0 must be higher."""
    engine = KokoroEngine(out_dir, threads=2)
    f0 = {}
    for vid in ("af_heart", "am_michael"):
        audio = engine.speak("The quick brown fox jumps over the lazy dog.", vid, speed=1.0, sampling_rate=SR)
        f0[vid] = estimate_pitch(audio)
    if not (f0["af_heart"] and f0["am_michael"] and f0["af_heart"] > f0["am_michael"]):
        raise ModelNotFoundError(f"Kokoro check failed: F0 female {f0['af_heart']} Hz is not above male "
                                 f"{f0['am_michael']} Hz; reinstall the parts and prepare again")
    return {"f0_hz": {k: round(v, 1) for k, v in f0.items()}}
