"""Settings of the data_prep commands, each declared once with its help; flags are built from them.

`add_config_args(parser, cls)` turns a dataclass into `--kebab-case` flags (lists are
comma-separated), plus `--config FILE.yaml`; `config_from_args(cls, args)` reads the YAML first,
lets explicit flags override it, and validates through `speech_adapter.config.from_dict`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Literal, get_args, get_origin

from data_prep.augment import AugmentConfig
from data_prep.nonspeech import SOUNDS
from speech_adapter.audio import MAX_AUDIO_SECONDS
from speech_adapter.config import from_dict, help_field, load_yaml
from speech_adapter.errors import ConfigError
from speech_adapter.offline_models.kokoro import GRADES, VOICES
from speech_adapter.paths import OFFLINE_WHISPER

ENGLISH_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-rp"]
OTHER_LANGUAGES = ["fr", "de", "es", "it"]
VARIANTS = ["m1", "m2", "m3", "m4", "m6", "m7", "f1", "f2", "f3", "f4", "f5"]
# one Kokoro voice per gender and accent never trained on (kokoro-js grades C to C+)
KOKORO_HELDOUT = ["af_nova", "am_puck", "bf_isabella", "bm_fable"]


@dataclasses.dataclass
class SynthConfig:
    """`data synth`: a synthetic corpus (espeak-ng and/or Kokoro) whose metadata is exact by construction."""

    out_dir: str = help_field("", "output dir: corpus.jsonl (or corpus-K-of-N.jsonl) + wavs/")
    num_clips: int = help_field(100, "clips in the whole corpus (all shards together)")
    seed: int = help_field(0, "the same seed gives the same rows and the same audio")
    num_shards: int = help_field(1, "split the clip indices into this many shards")
    shard_index: int = help_field(0, "which shard this run writes (0-based)")
    english_accents: list[str] = help_field(default_factory=lambda: list(ENGLISH_VOICES),
                                            help="espeak English voices sampled uniformly")
    other_languages: list[str] = help_field(default_factory=lambda: list(OTHER_LANGUAGES),
                                            help="non-English languages (text pool must have them)")
    p_other_language: float = help_field(0.1, "probability a clip is in a non-English language")
    variants: list[str] = help_field(default_factory=lambda: list(VARIANTS),
                                     help="espeak speaker variants (m* male, f* female)")
    rate_min: int = help_field(80, "speaking rate range, words/min (espeak 80-450; 175 normal)")
    rate_max: int = help_field(240, "upper end of the rate range, words/min")
    pitch_min: int = help_field(5, "base pitch range, espeak 0-99 (50 = voice default)")
    pitch_max: int = help_field(95, "upper end of the pitch range")
    volume_min: int = help_field(20, "volume range, espeak 0-200 (100 normal); above ~150 may clip")
    volume_max: int = help_field(170, "upper end of the volume range")
    p_noise: float = help_field(0.3, "probability a clip gets white background noise")
    snr_min: float = help_field(-5.0, "noise SNR range in dB (speech power over noise power)")
    snr_max: float = help_field(35.0, "upper end of the SNR range in dB")
    p_multi_speaker: float = help_field(0.1, "probability a clip concatenates several speakers")
    max_speakers: int = help_field(3, "most speakers in a multi-speaker clip (2..max)")
    gap_seconds: float = help_field(0.3, "silence between speakers in a multi-speaker clip")
    sampling_rate: int = help_field(16000, "sample rate of the written wavs")
    id_prefix: str = help_field("syn", "clip ids are '<prefix>-<index:06d>'")
    engine: Literal["espeak", "kokoro", "mixed"] = help_field(
        "espeak", "speech engine: espeak (formant synthesis, ~100 variants, 5 languages), kokoro "
        "(natural English, US/UK voices), mixed (each clip draws one; see kokoro_share)")
    kokoro_share: float = help_field(0.5, "mixed engine: probability a clip is spoken by Kokoro")
    kokoro_min_grade: str = help_field("C-", "Kokoro voices graded below this in kokoro-js's table are "
                                       "not used (A best .. F; 'D' adds 11 more voices)")
    kokoro_heldout_voices: list[str] = help_field(
        default_factory=lambda: list(KOKORO_HELDOUT),
        help="Kokoro voices never trained on: their clips get meta.voice_split=heldout for eval")
    kokoro_gender_balance: bool = help_field(
        True, "draw each Kokoro clip's gender first, half and half, then a voice of it (the English "
        "training voices graded C- or better are 9 women and 3 men: drawn by voice, 3 clips in 4 are women)")
    p_heldout_voice: float = help_field(0.2, "probability a Kokoro clip is spoken by a held-out voice")
    p_voice_mix: float = help_field(0.3, "probability a Kokoro speaker is a new one: two same-gender, "
                                    "same-accent voices' style vectors mixed")
    speed_min: float = help_field(0.8, "Kokoro speed range (0.5-2.0, 1 = the voice's own)")
    speed_max: float = help_field(1.25, "upper end of the Kokoro speed range")
    p_pitch_shift: float = help_field(0.0, "probability a Kokoro clip is pitch-shifted (librosa) before its "
                                      "pitch is measured")
    pitch_shift_max: float = help_field(2.0, "largest pitch shift either way, semitones")
    kokoro_threads: int = help_field(1, "onnxruntime threads for Kokoro (RTF ~1 per thread on these CPUs)")
    cache_dir: str = help_field("", "Kokoro audio cache, keyed by a hash of (text, voice/mix, speed, shift, "
                                "engine version) (default: $SPEECH_ADAPTER_HOME/tts_cache)")
    nonspeech_fraction: float = help_field(0.1, "share of clips that are sound without speech (noise, tones, "
                                           "near-silence, synthetic music; data_prep.nonspeech)")
    nonspeech_sounds: list[str] = help_field(default_factory=lambda: ["noise", "tone", "silence", "music"],
                                             help="kinds of non-speech clip, drawn uniformly: noise, tone, "
                                             "silence, music, animal (synthetic birdsong and calls; opt-in)")
    augment: AugmentConfig = help_field(default_factory=AugmentConfig,
                                        help="acoustic augmentation (data_prep.augment.AugmentConfig)")

    def validate(self):
        if self.num_clips < 1:
            raise ConfigError(f"num_clips: must be >= 1, got {self.num_clips}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(f"shard_index: {self.shard_index} not in 0..{self.num_shards - 1}")
        for lo, hi, span in (("rate_min", "rate_max", (80, 450)), ("pitch_min", "pitch_max", (0, 99)),
                             ("volume_min", "volume_max", (0, 200)), ("snr_min", "snr_max", None)):
            a, b = getattr(self, lo), getattr(self, hi)
            if a > b:
                raise ConfigError(f"{lo}: {a} is above {hi}={b}")
            if span and not (span[0] <= a and b <= span[1]):
                raise ConfigError(f"{lo}/{hi}: {a}..{b} outside espeak's {span[0]}..{span[1]}")
        for name in ("p_other_language", "p_noise", "p_multi_speaker", "nonspeech_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: must be a probability in [0, 1]")
        if not self.english_accents and self.p_other_language < 1.0:
            raise ConfigError("english_accents: empty, but p_other_language < 1")
        if not self.variants:
            raise ConfigError("variants: give at least one espeak variant")
        if self.max_speakers < 2 and self.p_multi_speaker > 0:
            raise ConfigError("max_speakers: must be >= 2 when p_multi_speaker > 0")

        bad = [s for s in self.nonspeech_sounds if s not in SOUNDS]
        if bad or (self.nonspeech_fraction > 0 and not self.nonspeech_sounds):
            raise ConfigError(f"nonspeech_sounds: {bad or 'empty'}; choose from {list(SOUNDS)}")
        self._validate_kokoro()

    def _validate_kokoro(self):
        for name in ("kokoro_share", "p_heldout_voice", "p_voice_mix", "p_pitch_shift"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: must be a probability in [0, 1]")
        if self.kokoro_min_grade not in GRADES:
            raise ConfigError(f"kokoro_min_grade: {self.kokoro_min_grade!r} is not one of {list(GRADES)}")
        unknown = [v for v in self.kokoro_heldout_voices if v not in VOICES]
        if unknown:
            raise ConfigError(f"kokoro_heldout_voices: unknown {unknown}; English voices: {', '.join(VOICES)}")
        if not 0.5 <= self.speed_min <= self.speed_max <= 2.0:
            raise ConfigError(f"speed_min/speed_max: {self.speed_min}..{self.speed_max} not within 0.5..2.0")
        if self.p_heldout_voice > 0 and not self.kokoro_heldout_voices:
            raise ConfigError("kokoro_heldout_voices: empty, but p_heldout_voice > 0")
        if self.pitch_shift_max < 0:
            raise ConfigError("pitch_shift_max: must be >= 0 semitones")
        if self.kokoro_threads < 1:
            raise ConfigError("kokoro_threads: must be >= 1")


@dataclasses.dataclass
class IOConfig:
    """Input/output/rejects settings shared by the row-to-row commands."""

    input: str = help_field("", "input corpus JSONL (audio paths relative to its dir)")
    output: str = help_field("", "output JSONL; rejects.jsonl is written beside it")
    strict: bool = help_field(False, "stop at the first bad row/clip instead of rejecting it")
    max_seconds: float = help_field(MAX_AUDIO_SECONDS, "refuse audio longer than this many seconds")
    limit: int = help_field(0, "process at most this many input rows (0 = all)")


@dataclasses.dataclass
class AttributesConfig(IOConfig):
    """`data attributes`: acoustic measurements and DeSTA-style bins from the audio alone."""

    agreement: bool = help_field(False, "print how measured bins agree with synthetic settings")
    fmin: float = help_field(60.0, "lowest F0 pyin searches, Hz")
    fmax: float = help_field(500.0, "highest F0 pyin searches, Hz")


@dataclasses.dataclass
class DescribeConfig(IOConfig):
    """`data describe`: the DeSTA2.5 seed description of each clip."""

    fields: list[str] = help_field(
        default_factory=lambda: ["gender", "pitch", "speed", "volume", "accent", "duration"],
        help="description fields in order (gender pitch speed volume accent duration noise "
             "emotion language speakers age reverb)")
    whisper: str = help_field(OFFLINE_WHISPER, "Whisper used when a transcript is missing")
    batch_size: int = help_field(8, "Whisper batch size for missing transcripts")


@dataclasses.dataclass
class ImportConfig:
    """`data import`: a local folder + label file, or a `datasets` dataset saved to disk."""

    source: str = help_field("", "label file (.csv/.tsv/.jsonl) or a dir saved by save_to_disk")
    out_dir: str = help_field("", "output dir: corpus.jsonl, wavs/, rejects.jsonl")
    preset: str | None = help_field(None, "column layout: librispeech, libritts, vctk, crema_d, common_voice")
    audio_root: str | None = help_field(None, "dir audio paths are relative to (default: the label file's)")
    split: str | None = help_field(None, "split of a DatasetDict saved to disk")
    audio_column: str | None = help_field(None, "column with the audio path / Audio feature")
    text_column: str | None = help_field(None, "column with the transcript")
    speaker_column: str | None = help_field(None, "column with the speaker id")
    gender_column: str | None = help_field(None, "column with the gender (m/f/male/female...)")
    accent_column: str | None = help_field(None, "column with the accent")
    emotion_column: str | None = help_field(None, "column with the emotion label")
    age_column: str | None = help_field(None, "column with the age")
    language_column: str | None = help_field(None, "column with the language code")
    id_column: str | None = help_field(None, "column with a row id (default: derived from the row)")
    language: str = help_field("en", "language of every row when no language column is given")
    id_prefix: str = help_field("imp", "prefix of derived ids")
    strict: bool = help_field(False, "stop at the first bad row instead of rejecting it")
    max_seconds: float = help_field(MAX_AUDIO_SECONDS, "refuse audio longer than this many seconds")
    limit: int = help_field(0, "import at most this many rows (0 = all)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-").replace(".", "-")


def add_config_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), prefix: str = "") -> None:
    """Add one flag per dataclass field (default None = "not given"), plus --config.

    A nested dataclass field `augment` gives flags `--augment-p-noise` (dest "augment.p_noise").
    """
    if not prefix:
        parser.add_argument("--config", help="YAML file with these settings; flags override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            add_config_args(parser, tp, prefix=f"{prefix}{f.name}.")
            continue
        name = prefix + f.name
        helptext = f"{f.metadata.get('help', '')} (default: {_default(f)})"
        if tp is bool:
            parser.add_argument(_flag(name), dest=name, action="store_const", const=True,
                                default=None, help=helptext)
            continue
        kw = {"dest": name, "default": None, "help": helptext}
        base = tp
        if get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            base = next(a for a in get_args(tp) if a is not type(None))
        if get_origin(base) is Literal:
            kw["choices"] = list(get_args(base))
        elif get_origin(base) is list:
            kw["metavar"] = "A,B,..."
        elif base in (int, float):
            kw["type"] = base
        parser.add_argument(_flag(name), **kw)


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    value = f.default_factory()
    return ",".join(map(str, value)) if isinstance(value, list) else repr(value)


def config_from_args(cls, args: argparse.Namespace, base: dict | None = None):
    """Build and validate `cls` from `base` (a recipe's section) or the --config YAML, overridden
    by the explicit flags."""
    data = dict(base) if base is not None else load_yaml(args.config) if getattr(args, "config", None) else {}
    _merge_flags(cls, args, data, "")
    return from_dict(cls, data)


def _merge_flags(cls, args: argparse.Namespace, data: dict, prefix: str) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, name = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(tp):
            sub = data.get(f.name)
            sub = dict(sub) if isinstance(sub, dict) else {}
            _merge_flags(tp, args, sub, f"{name}.")
            if sub:
                data[f.name] = sub
            continue
        value = getattr(args, name, None)
        if value is None:
            continue
        if get_origin(tp) is list and isinstance(value, str):
            item = get_args(tp)[0]
            try:
                value = [item(v.strip()) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"{_flag(name)}: expected comma-separated {item.__name__}s") from None
        data[f.name] = value
