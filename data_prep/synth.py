"""`data synth`: a synthetic speech corpus from espeak-ng and/or Kokoro with exact metadata.

The offline default data (DeSTA2's seed descriptions need attributes; here they are known by
construction): each clip samples a text from the shipped pool, a language/accent,
speaker variant(s), rate, pitch and volume, optionally white noise at a known SNR and several
speakers concatenated. Clip `i` draws everything from `np.random.default_rng([seed, i])`, so a
seed fixes rows and audio whatever the sharding; shards take `i % num_shards == shard_index`.
Wavs are written atomically and rows appended durably: a rerun after a kill skips finished
ids and regenerates the rest identically, and a rerun with a larger `num_clips` adds the new
clips only (clip `i` does not depend on `num_clips`; every other setting must match).

SNR definition (shared with `attributes.estimate_snr`): 10*log10(P_speech / P_noise), where
P_speech is the mean power of the clean clip's active 20 ms frames (above -50 dBFS).

`engine: kokoro` (or `mixed`, drawn per clip) speaks English with Kokoro-82M voices
(`kokoro_tts.py`): labels are exact by construction (gender, US/UK accent, voice id or the two
mixed voices and their weight, speed), the pitch label is measured from the clean audio (after
an optional pitch shift) as `attributes` measures it, and clips of `kokoro_heldout_voices` carry
`meta.voice_split: heldout`. Kokoro's clean audio is cached by a hash of everything that
determines it, so a rerun or a second corpus over the same clips synthesizes nothing.
Kokoro clips and espeak clips each draw from their own seeded streams; an espeak-only corpus is
what it was before the Kokoro engine existed. `augment` (data_prep.augment) applies to both.

`nonspeech_fraction` of the clips (drawn per clip from a stream of their own) are sound without
speech (`data_prep.nonspeech`: noise, tones, near-silence, synthetic music; `meta.speech: false`,
empty transcript); every speech clip carries `meta.speech: true`. A non-speech clip is not
augmented: its `meta.level_db` is the level of exactly what is written. The speech clips at the
other indices are the ones a corpus without non-speech clips has there.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from data_prep import espeak, nonspeech
from data_prep.attributes import SR, estimate_pitch
from data_prep.augment import ACTIVE_DBFS, FRAME, active_power, apply_augment, plan_augment
from data_prep.config import SynthConfig
from data_prep.kokoro_tts import KokoroEngine, engine_version, mix_voices
from data_prep.rows import done_ids
from data_prep.text_pool import text_pool
from speech_adapter.audio import save_wav
from speech_adapter.config import to_dict
from speech_adapter.errors import ConfigError
from speech_adapter.offline_models.kokoro import VOICES, grade_at_least, load_voices
from speech_adapter.paths import home
from speech_adapter.utils.io import JsonlAppender, atomic_path, write_json_atomic

CONFIG_NAME = "synth_config.json"
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian"}
KOKORO_PEAK = 0.9  # Kokoro's clean speech is peak-normalized to this (some voices overshoot 1.0)
MIX_WEIGHT = (0.3, 0.7)  # range of the first voice's weight in a mixed speaker
# independent per-clip random streams: np.random.default_rng([seed, index, STREAM])
ENGINE_STREAM, KOKORO_STREAM, AUGMENT_STREAM, NONSPEECH_STREAM = 1, 2, 3, 4
# what a setting added later did before it existed: a corpus made then reads as made with this
LEGACY_SETTINGS = {"nonspeech_fraction": 0.0, "kokoro_gender_balance": False}


VOICE_GROUPS = ("Kokoro, training voices", "Kokoro, held-out voices", "espeak-ng")


def voice_group(meta: dict) -> str:
    """Which voices a synthetic clip's speaker comes from: Kokoro voices trained on, Kokoro
    voices held out of training (`meta.voice_split`), or espeak-ng's (no voice split)."""
    return {"train": VOICE_GROUPS[0], "heldout": VOICE_GROUPS[1]}.get(meta.get("voice_split"), VOICE_GROUPS[2])


def corpus_path(cfg: SynthConfig) -> Path:
    """corpus.jsonl for one shard, corpus-K-of-N.jsonl when sharded."""
    out = Path(cfg.out_dir)
    if cfg.num_shards == 1:
        return out / "corpus.jsonl"
    return out / f"corpus-{cfg.shard_index:03d}-of-{cfg.num_shards:03d}.jsonl"


def plan_clip(cfg: SynthConfig, index: int) -> dict:
    """Everything about clip `index` except the audio: a pure function of (config, seed, index)."""
    if cfg.nonspeech_fraction > 0:
        rng = np.random.default_rng([cfg.seed, index, NONSPEECH_STREAM])
        if rng.random() < cfg.nonspeech_fraction:
            return nonspeech.plan(cfg.nonspeech_sounds, index, cfg.seed, rng)
    engine = cfg.engine
    if engine == "mixed":
        u = np.random.default_rng([cfg.seed, index, ENGINE_STREAM]).random()
        engine = "kokoro" if u < cfg.kokoro_share else "espeak"
    plan = _plan_kokoro(cfg, index) if engine == "kokoro" else _plan_espeak(cfg, index)
    plan["meta"]["speech"] = True
    if cfg.augment.enabled:
        plan["augment"] = plan_augment(cfg.augment, np.random.default_rng([cfg.seed, index, AUGMENT_STREAM]))
        plan["meta"]["augment"] = plan["augment"]
    return plan


def kokoro_voices(cfg: SynthConfig) -> dict[str, list[str]]:
    """{"train": ids, "heldout": ids}: held-out voices whatever their grade, the rest by grade."""
    held = [v for v in VOICES if v in cfg.kokoro_heldout_voices]
    train = [v for v, info in VOICES.items()
             if v not in cfg.kokoro_heldout_voices and grade_at_least(info.grade, cfg.kokoro_min_grade)]
    return {"train": train, "heldout": held}


def _plan_kokoro(cfg: SynthConfig, index: int) -> dict:
    rng = np.random.default_rng([cfg.seed, index, KOKORO_STREAM])
    u = rng.random(4)  # held-out?, mix?, pitch shift?, noise?
    pool = text_pool("en")
    text = pool[int(rng.integers(len(pool)))]
    split = "heldout" if u[0] < cfg.p_heldout_voice else "train"
    ids = kokoro_voices(cfg)[split]
    if not ids:
        raise ConfigError(f"kokoro_min_grade: no {split} Kokoro voice is left (min grade "
                          f"{cfg.kokoro_min_grade!r}, held out {cfg.kokoro_heldout_voices})")
    if cfg.kokoro_gender_balance:
        genders = sorted({VOICES[v].gender for v in ids})
        gender = genders[int(rng.integers(len(genders)))]
        ids = [v for v in ids if VOICES[v].gender == gender]
    first = ids[int(rng.integers(len(ids)))]
    info = VOICES[first]
    partners = [v for v in ids if v != first and VOICES[v].gender == info.gender and VOICES[v].accent == info.accent]
    second = partners[int(rng.integers(len(partners)))] if partners else None
    weight = round(float(rng.uniform(*MIX_WEIGHT)), 3)
    speed = round(float(rng.uniform(cfg.speed_min, cfg.speed_max)), 3)
    shift = round(float(rng.uniform(-cfg.pitch_shift_max, cfg.pitch_shift_max)), 2)
    snr = round(float(rng.uniform(cfg.snr_min, cfg.snr_max)), 1)
    noise_seed = int(rng.integers(2**31))
    if u[1] < cfg.p_voice_mix and second:
        voices, weights = [first, second], [weight, round(1.0 - weight, 3)]
        voice = f"{first}*{weights[0]}+{second}*{weights[1]}"
    else:
        voices, weights, voice = [first], [1.0], first
    meta = {
        "voice": voice, "kokoro_voices": voices, "voice_weights": weights, "voice_split": split,
        "gender": info.gender, "accent": info.accent, "language_name": "English", "speed": speed,
        "pitch_shift": shift if u[2] < cfg.p_pitch_shift else 0.0, "snr_db": snr if u[3] < cfg.p_noise else None,
        "speakers": 1, "text_id": text.id, "seed": cfg.seed, "source": "kokoro", "lang": info.lang,
    }
    return {"index": index, "language": "en", "transcript": text.text, "texts": [text.text], "voices": voices,
            "meta": meta, "noise_seed": noise_seed}


def _plan_espeak(cfg: SynthConfig, index: int) -> dict:
    rng = np.random.default_rng([cfg.seed, index])
    if cfg.other_languages and rng.random() < cfg.p_other_language:
        language = str(rng.choice(cfg.other_languages))
        voice_lang, accent = language, None
    else:
        language = "en"
        voice_lang = str(rng.choice(cfg.english_accents))
        accent = espeak.accent_name(voice_lang)
    speakers = 1
    if rng.random() < cfg.p_multi_speaker:
        speakers = int(rng.integers(2, cfg.max_speakers + 1))
    pool = text_pool(language)
    texts = [pool[int(rng.integers(len(pool)))] for _ in range(speakers)]
    variants = rng.choice(cfg.variants, size=speakers, replace=speakers > len(cfg.variants))
    voices = [f"{voice_lang}+{v}" for v in variants]
    genders = [espeak.variant_gender(v) for v in voices]
    rate = int(rng.integers(cfg.rate_min, cfg.rate_max + 1))
    pitch = int(rng.integers(cfg.pitch_min, cfg.pitch_max + 1))
    volume = int(rng.integers(cfg.volume_min, cfg.volume_max + 1))
    snr = None
    if rng.random() < cfg.p_noise:
        snr = round(float(rng.uniform(cfg.snr_min, cfg.snr_max)), 1)
    noise_seed = int(rng.integers(2**31))
    gender = genders[0] if len(set(genders)) == 1 else "mixed"
    meta = {
        "voice": voices[0], "gender": gender, "accent": accent, "language_name": LANGUAGE_NAMES[language],
        "rate": rate, "pitch": pitch, "volume": volume, "snr_db": snr, "speakers": speakers,
        "text_id": texts[0].id, "seed": cfg.seed, "source": "espeak-ng",
    }
    if speakers > 1:
        meta.update(voices=voices, genders=genders, text_ids=[t.id for t in texts])
    return {"index": index, "language": language, "transcript": " ".join(t.text for t in texts),
            "texts": [t.text for t in texts], "voices": voices, "meta": meta, "noise_seed": noise_seed}


def render_clip(cfg: SynthConfig, plan: dict) -> tuple[np.ndarray, bool]:
    """The clip's audio at `cfg.sampling_rate` (float32 mono) and whether it had to be clipped.

    A Kokoro plan's meta gets its measured `pitch_hz` here (from the clean audio), a non-speech
    plan's its measured `level_db`.
    """
    m = plan["meta"]
    if not m["speech"]:
        return nonspeech.render(plan, cfg.sampling_rate), False  # peak <= nonspeech.PEAK
    if m["source"] == "kokoro":
        x, m["pitch_hz"] = kokoro_speech(cfg, plan)
    else:
        x = _espeak_speech(cfg, plan)
    if m["snr_db"] is not None:
        p_speech = active_power(x)
        p_noise = p_speech / 10 ** (m["snr_db"] / 10)
        noise = np.random.default_rng(plan["noise_seed"]).standard_normal(len(x))
        x = x + (noise * np.sqrt(p_noise)).astype(np.float32)
    if plan.get("augment"):
        x = apply_augment(x, cfg.sampling_rate, plan["augment"])
    clipped = bool(np.max(np.abs(x)) > 1.0) if len(x) else False
    return np.clip(x, -1.0, 1.0).astype(np.float32), clipped


def _espeak_speech(cfg: SynthConfig, plan: dict) -> np.ndarray:
    import soxr  # librosa's "soxr_hq" backend, without importing librosa (numba start-up)

    m = plan["meta"]
    gap = np.zeros(int(cfg.gap_seconds * cfg.sampling_rate), np.float32)
    parts = []
    for k, (text, voice) in enumerate(zip(plan["texts"], plan["voices"])):
        audio, sr = espeak.synthesize(text, voice=voice, rate=m["rate"], pitch=m["pitch"], volume=m["volume"])
        audio = soxr.resample(audio, sr, cfg.sampling_rate, quality="HQ")  # (T,) at the target rate
        if k:
            parts.append(gap)
        parts.append(audio.astype(np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)  # (T,)


@functools.lru_cache(maxsize=2)
def _kokoro_engine(threads: int):
    return KokoroEngine(threads=threads)


def cache_key(cfg: SynthConfig, plan: dict, engine_version: str) -> str:
    """sha256 of everything that determines a Kokoro clip's clean audio."""
    m = plan["meta"]
    key = {"engine": engine_version, "text": plan["transcript"], "voices": m["kokoro_voices"],
           "weights": m["voice_weights"], "speed": m["speed"], "lang": m["lang"], "shift": m["pitch_shift"],
           "sampling_rate": cfg.sampling_rate, "peak": KOKORO_PEAK}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _cache_dir(cfg: SynthConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else home() / "tts_cache"


def kokoro_speech(cfg: SynthConfig, plan: dict, engine=None) -> tuple[np.ndarray, float | None]:
    """(clean peak-normalized speech at cfg.sampling_rate, its measured median F0 in Hz), from the
    cache when this exact clip was made before."""
    m = plan["meta"]
    engine = engine or _kokoro_engine(cfg.kokoro_threads)
    path = _cache_dir(cfg) / (key := cache_key(cfg, plan, engine_version()))[:2] / f"{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["audio"].astype(np.float32), (float(z["pitch_hz"]) if z["pitch_hz"] > 0 else None)
    styles = [engine.voices[v] for v in m["kokoro_voices"]]
    style = styles[0] if len(styles) == 1 else mix_voices(styles[0], styles[1], m["voice_weights"][0])
    x = engine.speak(plan["transcript"], style, speed=m["speed"], lang=m["lang"], sampling_rate=cfg.sampling_rate)
    if m["pitch_shift"]:
        import librosa

        x = librosa.effects.pitch_shift(x, sr=cfg.sampling_rate, n_steps=m["pitch_shift"]).astype(np.float32)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0:
        x = (x * (KOKORO_PEAK / peak)).astype(np.float32)
    f0 = _measure_pitch(x, cfg.sampling_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, audio=x, pitch_hz=np.float64(f0 or 0.0))
    return x, f0


def _measure_pitch(x: np.ndarray, sr: int) -> float | None:
    """Median F0 as `data attributes` measures it (pyin on 16 kHz audio), rounded like it."""
    if sr != SR:
        import soxr

        x = soxr.resample(x, sr, SR, quality="HQ").astype(np.float32)
    f0 = estimate_pitch(x)
    return None if f0 is None else round(f0, 2)


def build_row(cfg: SynthConfig, plan: dict, num_samples: int, clipped: bool) -> dict:
    cid = f"{cfg.id_prefix}-{plan['index']:06d}"
    meta = dict(plan["meta"], clipped=clipped)
    return {"id": cid, "audio": f"wavs/{cid}.wav", "sampling_rate": cfg.sampling_rate,
            "duration": round(num_samples / cfg.sampling_rate, 4), "transcript": plan["transcript"],
            "language": plan["language"], "meta": meta}


# settings that change how clips are made, not which: Kokoro's audio is cached by content and
# comes out bit-identical at 1 or 2 onnxruntime threads (python -m benchmarks.kokoro_threads)
NOT_SHAPING = ("cache_dir", "kokoro_threads")


def _check_same_config(cfg: SynthConfig) -> None:
    """A resumed or sharded run must use the settings that made the existing files."""
    path = Path(cfg.out_dir) / CONFIG_NAME
    mine = {k: v for k, v in to_dict(cfg).items() if k not in ("shard_index", "out_dir", *NOT_SHAPING)}
    if path.exists():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        # settings added since that run was made read as their defaults there
        defaults = {**to_dict(SynthConfig()), **LEGACY_SETTINGS}
        theirs = {**{k: defaults[k] for k in mine if k not in theirs}, **theirs}
        # Kokoro's settings shape no clip of an espeak corpus
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)
                      and not (k.startswith("kokoro_") and mine.get("engine") == theirs.get("engine") == "espeak"))
        # clip i does not depend on num_clips: a larger one extends the corpus with exactly the
        # clips a run with it from the start has there
        grows = "num_clips" in diff and mine["num_clips"] > theirs["num_clips"]
        if grows:
            diff.remove("num_clips")
        if diff:
            raise ConfigError(f"{path}: {Path(cfg.out_dir)} was made with different settings "
                              f"({', '.join(diff)}); use a new --out-dir or the same settings"
                              + (" (num_clips may only grow)" if "num_clips" in diff else ""))
        if grows:
            write_json_atomic(path, mine)
    else:
        write_json_atomic(path, mine)


def synth_corpus(cfg: SynthConfig, progress: bool = True) -> dict:
    """Write (or resume) this shard of the corpus; returns counts {written, skipped, total}."""
    from tqdm import tqdm

    if not cfg.out_dir:
        raise ConfigError("out_dir: give an output directory (--out-dir)")
    if cfg.engine != "espeak":
        load_voices()  # one-line error naming the setup step when Kokoro is not prepared
    for v in cfg.variants:
        if v not in espeak.list_variants():
            raise ConfigError(f"variants: unknown espeak variant {v!r}")
    codes = espeak.language_codes()
    for lang in list(cfg.english_accents) + list(cfg.other_languages):
        if lang not in codes:
            raise ConfigError(f"unknown espeak language {lang!r}")
    for lang in cfg.other_languages:
        if lang not in LANGUAGE_NAMES:
            raise ConfigError(f"other_languages: no shipped text for {lang!r}; have {sorted(LANGUAGE_NAMES)}")
    _check_same_config(cfg)
    out = corpus_path(cfg)
    wav_dir = Path(cfg.out_dir) / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    mine = range(cfg.shard_index, cfg.num_clips, cfg.num_shards)
    done = done_ids(out, "synth")
    todo = [i for i in mine if f"{cfg.id_prefix}-{i:06d}" not in done]
    written = 0
    with JsonlAppender(out) as rows, tqdm(total=len(mine), initial=len(mine) - len(todo), unit="clip",
                                          desc="synth", disable=not progress, file=sys.stderr) as bar:
        for i in todo:
            plan = plan_clip(cfg, i)
            audio, clipped = render_clip(cfg, plan)
            row = build_row(cfg, plan, len(audio), clipped)
            save_wav(Path(cfg.out_dir) / row["audio"], audio, cfg.sampling_rate)  # atomic; OSError names the file
            rows.write(row)
            written += 1
            bar.update(1)
    return {"written": written, "skipped": len(mine) - len(todo), "total": len(mine), "output": str(out)}
