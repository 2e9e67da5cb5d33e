"""eSpeak NG speech synthesis through `ctypes`, from the library `espeakng-loader` bundles.

Follows the espeak-ng C API (speak_lib.h): `espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, ...)`,
a synth callback that collects int16 samples at 22050 Hz, `espeak_SetVoiceByName("en-us+f3")`
and `espeak_SetParameter` for rate (words per minute), pitch (0-99) and volume (0-200).

The library keeps global state and is not thread safe, so every call goes through one
process-level lock, and the library is initialised lazily on first use, never at import.
It also carries hidden state from one utterance to the next (so the same call can give
different samples); where `os.fork` exists each utterance is synthesised in a child forked
from a parent that never speaks, which makes the output reproducible (~30 ms extra per call).
Voices are "<language>[+<variant>]": the language picks accent/phonology ("en-us",
"en-gb-scotland", "fr"), the variant picks the speaker (m1..m8 male, f1..f5 female, ...).
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speech_adapter.config import did_you_mean
from speech_adapter.errors import ConfigError, SpeechAdapterError

SAMPLE_RATE = 22050  # espeak-ng's native output rate
RATE_RANGE = (80, 450)  # words per minute espeak accepts
PITCH_RANGE = (0, 99)  # espeak base pitch, 50 = the voice's default
VOLUME_RANGE = (0, 200)  # espeak amplitude, 100 = normal

# espeak_PARAMETER / espeak_AUDIO_OUTPUT / flags from speak_lib.h
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ERRORS = {-1: "internal error", 1: "buffer full", 2: "not found"}

# Accent names for the English voices the bundled data ships (verified with list_voices());
# the same strings as speech_adapter.templates.ACCENTS, which offers them as answer options.
ENGLISH_ACCENTS = {
    "en-us": "American English",
    "en-us-nyc": "New York English",
    "en-gb": "British English",
    "en-gb-x-rp": "Received Pronunciation",
    "en-gb-scotland": "Scottish English",
    "en-gb-x-gbclan": "Lancastrian English",
    "en-gb-x-gbcwmd": "West Midlands English",
    "en-029": "Caribbean English",
}

_CallbackType = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _VoiceStruct(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # packed: (priority byte, NUL-terminated code)* then NUL
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class Voice:
    """A language voice from the bundled data: `name` as espeak reports it, its language codes."""

    name: str
    languages: tuple[str, ...]
    identifier: str  # file path under espeak-ng-data/voices or lang, e.g. "gmw/en-US"


class _Engine:
    """The one espeak-ng instance of this process (lazy; every call under `lock`)."""

    def __init__(self):
        self.lock = threading.RLock()
        self._lib = None
        self._samples: list[np.ndarray] = []
        self._callback = _CallbackType(self._collect)  # keep a reference: C holds the pointer

    def _collect(self, wav, n, _events) -> int:
        if wav and n > 0:
            self._samples.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    def lib(self):
        if self._lib is None:
            try:
                import espeakng_loader
            except ImportError:
                raise SpeechAdapterError(
                    "espeakng-loader is not installed; pip install espeakng-loader") from None
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data = Path(espeakng_loader.get_data_path())
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceStruct))
            lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
            sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data.parent).encode(), 0)
            if sr != SAMPLE_RATE:
                raise SpeechAdapterError(f"espeak-ng failed to initialise from {data} (returned {sr})")
            lib.espeak_SetSynthCallback(self._callback)
            self._lib = lib
            self.data_path = data
        return self._lib

    def synth(self, text: str, voice: str, rate: int, pitch: int, volume: int) -> np.ndarray:
        """int16 samples; in a forked child where possible, so the output is reproducible."""
        with self.lock:
            lib = self.lib()
            err = lib.espeak_SetVoiceByName(voice.encode())  # validates the name in the parent
            if err != 0:
                hint = did_you_mean(voice.split("+")[0], _languages())
                raise ConfigError(f"espeak voice {voice!r}: {_ERRORS.get(err, err)}{hint}")
            if not hasattr(os, "fork"):
                return self._synth_here(text, voice, rate, pitch, volume)
            return self._synth_forked(text, voice, rate, pitch, volume)

    def _synth_here(self, text, voice, rate, pitch, volume) -> np.ndarray:
        lib = self.lib()
        # espeak-ng seeds its own generator (breath noise of variants such as +f2) from the clock
        # at initialisation, so the same call differed between processes; a fixed seed per call
        # makes every process give the same samples.
        lib.espeak_ng_SetRandSeed(ctypes.c_long(0))
        lib.espeak_SetVoiceByName(voice.encode())
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_VOLUME, volume), (_RANGE, 50)):
            lib.espeak_SetParameter(param, int(value), 0)
        self._samples = []
        data = text.encode("utf-8")
        err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise SpeechAdapterError(f"espeak_Synth failed for voice {voice!r}: {_ERRORS.get(err, err)}")
        out = np.concatenate(self._samples) if self._samples else np.zeros(0, np.int16)
        self._samples = []
        return out

    def _synth_forked(self, text, voice, rate, pitch, volume) -> np.ndarray:
        # espeak-ng keeps C statics (e.g. the pitch-flutter phase in wavegen) across utterances
        # that neither espeak_Terminate nor a rand seed resets, so the same call gives slightly
        # different audio depending on what was spoken before. A child forked from a parent
        # that never synthesises always starts from the same state: same call, same samples.
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: synthesise, send the samples, exit without Python cleanup
            code = 0
            try:
                os.close(r)
                payload = self._synth_here(text, voice, rate, pitch, volume).tobytes()
                view = memoryview(payload)
                while view:
                    view = view[os.write(w, view):]
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        chunks = []
        with os.fdopen(r, "rb") as f:
            while block := f.read(1 << 16):
                chunks.append(block)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SpeechAdapterError(f"espeak synthesis failed for voice {voice!r} (child exit "
                                     f"{os.waitstatus_to_exitcode(status)})")
        return np.frombuffer(b"".join(chunks), dtype=np.int16).copy()


@functools.lru_cache(maxsize=1)
def _engine() -> _Engine:
    return _Engine()


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
               volume: int = 100) -> tuple[np.ndarray, int]:
    """Speak `text`; returns (mono float32 samples in [-1, 1], 22050).

    `voice` is "<language>[+<variant>]" (e.g. "en-gb-scotland+f3"); `rate` in words per minute
    (80-450), `pitch` 0-99 (50 = the voice's default), `volume` 0-200 (100 = normal).
    Raises `ConfigError` for an unknown voice or an out-of-range setting.
    """
    for name, value, (lo, hi) in (("rate", rate, RATE_RANGE), ("pitch", pitch, PITCH_RANGE),
                                  ("volume", volume, VOLUME_RANGE)):
        if not lo <= int(value) <= hi:
            raise ConfigError(f"espeak {name}={value} is outside {lo}..{hi}")
    if "+" in voice:
        variant = voice.split("+", 1)[1]
        if variant not in list_variants():
            raise ConfigError(f"espeak voice {voice!r}: unknown variant {variant!r}"
                              f"{did_you_mean(variant, list_variants())}")
    if not text.strip():
        return np.zeros(0, np.float32), SAMPLE_RATE
    pcm = _engine().synth(text, _resolve(voice), rate, pitch, volume)  # (T,) int16
    return pcm.astype(np.float32) / 32768.0, SAMPLE_RATE


def _resolve(voice: str) -> str:
    """Language code -> the voice file espeak_SetVoiceByName finds ("en-gb+m3" -> "gmw/en+m3").

    espeak matches names against voice *file* names, and "en-gb" lives in the file "gmw/en".
    """
    lang, plus, variant = voice.partition("+")
    for v in _voices():
        if v.languages and v.languages[0] == lang.lower():
            return v.identifier + plus + variant
    return voice


def _languages() -> list[str]:
    return [lang for v in list_voices() for lang in v.languages]


@functools.lru_cache(maxsize=1)
def _voices() -> tuple[Voice, ...]:
    eng = _engine()
    with eng.lock:
        arr = eng.lib().espeak_ListVoices(None)
        voices = []
        i = 0
        while arr[i]:
            v = arr[i].contents
            langs = []
            p = v.languages
            while p is not None and ctypes.string_at(p, 1) != b"\0":  # skip priority byte
                code = ctypes.string_at(p + 1)
                langs.append(code.decode())
                p += len(code) + 2
            voices.append(Voice(v.name.decode(), tuple(langs), v.identifier.decode()))
            i += 1
    return tuple(voices)


def list_voices() -> list[Voice]:
    """The language voices the bundled espeak-ng data supports."""
    return list(_voices())


def language_codes() -> set[str]:
    """Every language code usable as the first part of a voice name ("en-us", "fr", ...)."""
    return {lang for v in _voices() for lang in v.languages}


@functools.lru_cache(maxsize=1)
def list_variants() -> dict[str, str | None]:
    """Variant name -> gender ("male", "female" or None when the file declares none).

    Read from the `voices/!v` files of the bundled data (each may declare `gender male|female`).
    """
    try:
        import espeakng_loader
    except ImportError:
        raise SpeechAdapterError("espeakng-loader is not installed; pip install espeakng-loader") from None
    vdir = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    out: dict[str, str | None] = {}
    for f in sorted(vdir.iterdir()):
        gender = None
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "gender" and parts[1] in ("male", "female"):
                gender = parts[1]
                break
        out[f.name] = gender
    return out


def variant_gender(voice: str) -> str | None:
    """Gender of a voice name's variant ("en-us+f3" -> "female"); espeak's default voice is male."""
    if "+" not in voice:
        return "male"
    return list_variants().get(voice.split("+", 1)[1])


def accent_name(language: str) -> str | None:
    """Human accent name for an English espeak language code, e.g. "en-gb-scotland"."""
    return ENGLISH_ACCENTS.get(language.lower())


def data_dir() -> Path:
    """The espeak-ng-data directory in use."""
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


__all__ = ["SAMPLE_RATE", "ENGLISH_ACCENTS", "Voice", "synthesize", "list_voices", "list_variants",
           "language_codes", "variant_gender", "accent_name", "data_dir"]
