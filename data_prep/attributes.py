"""`data attributes`: acoustic attributes measured from the audio alone, and DeSTA-style bins.

Follows DeSTA2 / DeSTA2.5-Audio, whose seed descriptions carry categorical attributes
("Pitch: High, Speaking speed: Fast, Volume: Normal"); the categories here come from
measurements with librosa, and every threshold lives in the one table `BINS` below
(`SETTING_EDGES` maps the synthetic corpus's espeak settings onto the same labels, for
`agreement` and for describing synthetic rows from their exact settings).

Measurements (all on 16 kHz mono; 20 ms frames):
- `duration_s`: samples / rate.
- `pitch_hz`: median F0 of the frames pyin calls voiced (NaN-free; None if none are voiced).
- `loudness_dbfs`: speech level in dBFS: mean power of the *active* frames (above -50 dBFS and
  6 dB above the noise floor) less the noise power, so neither pauses nor background noise
  move it; the whole-clip RMS is `rms_dbfs`.
- `rate_wps`: words per second over the active span (first to last active frame; the whole
  clip when the SNR is below 5 dB or the span is under half the clip) when the transcript is
  known; otherwise onsets per second / `SYLLABLES_PER_WORD` (an estimate; `rate_source` says
  which).
- `snr_db`: 10*log10((P_active - P_noise) / P_noise), P_noise from minimum statistics of the
  spectrum (`estimate_snr`), P_active = mean power of the active frames; capped at
  `SNR_CAP_DB` (digital silence would give infinity).
- `silence_ratio`: fraction of frames not active.
Pitch bins are gender-aware when the gender is known: F0 is compared in semitones with a
reference per gender (`PITCH_REFERENCE_HZ`), because a "high" male voice is a "low" female one.

A clip known to hold no speech (`meta.speech: false`, e.g. `data synth`'s noise, tones and
music) has no speaker pitch or speaking rate: `pitch_hz` and `rate_wps` are None rather than
pyin's or the onset detector's reading of a tone or a drum; its level `loudness_dbfs` is the
whole clip's RMS (the sound is the signal: there is no speech to separate from a floor), and
its noise bin is None (an SNR needs speech); the SNR estimate itself is still recorded.
"""

from __future__ import annotations

import math

import numpy as np

from data_prep.rows import RejectLog, audio_path, pending_rows, rebase_audio, summary
from speech_adapter.audio import load_audio
from speech_adapter.errors import AudioError, ConfigError
from speech_adapter.utils.io import JsonlAppender

SR = 16000
FRAME = 320  # 20 ms
SNR_CAP_DB = 60.0
NOISE_PERCENTILE = 1  # per-bin percentile over time taken as the noise floor
NOISE_SMOOTH = 3  # frames (10 ms hop) the periodogram is averaged over first
NOISE_BIAS = 0.124  # that percentile / the mean, measured on white noise (3 seeds: 0.123-0.124)
PYIN_RESOLUTION = 0.25  # semitones per pyin state: 4x faster than librosa's 0.1, same medians
SYLLABLES_PER_WORD = 1.4  # English average, converts onset (syllable) rate to words/s
RATE_MIN_SNR_DB = 5.0  # below this the active span is unreliable and the rate uses the duration

# Reference F0 per gender (Hz): typical adult speaking F0 (male ~100-130, female ~190-230), and
# their geometric mean when the gender is unknown.
PITCH_REFERENCE_HZ = {"male": 115.0, "female": 210.0, None: 155.0}

LEVELS = ("Very low", "Low", "Normal", "High", "Very high")
SPEEDS = ("Very slow", "Slow", "Normal", "Fast", "Very fast")
DURATIONS = ("Very short", "Short", "Medium", "Long", "Very long")
NOISE = ("Very low", "Low", "Medium", "High", "Very high")

# THE bin table: attribute -> (measured quantity, upper edges of the first four bins, labels).
# A value v gets labels[k] for the first edge with v < edges[k], else labels[4].
BINS = {
    "pitch": ("semitones from PITCH_REFERENCE_HZ[gender]", (-4.0, -1.5, 1.5, 4.0), LEVELS),
    "speed": ("rate_wps, words per second", (2.0, 2.7, 3.5, 4.3), SPEEDS),
    "volume": ("loudness_dbfs, speech level in dBFS", (-30.0, -25.0, -20.0, -16.0), LEVELS),
    "duration": ("duration_s, seconds", (1.5, 3.0, 6.0, 12.0), DURATIONS),
    # noise level from snr_db: high SNR = little noise, so the edges run downwards
    # (SNR >= 25 dB "Very low" i.e. clean, 15-25 "Low", 5-15 "Medium", -5..5 "High", below "Very high")
    "noise": ("-snr_db (negated SNR in dB)", (-25.0, -15.0, -5.0, 5.0), NOISE),
}


def bin_value(name: str, value: float | None) -> str | None:
    """The BINS label of `value` for attribute `name` (None when the value is unknown)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    _, edges, labels = BINS[name]
    for edge, label in zip(edges, labels):
        if value < edge:
            return label
    return labels[-1]


def semitones(f0_hz: float, gender: str | None) -> float:
    ref = PITCH_REFERENCE_HZ.get(gender if gender in ("male", "female") else None)
    return 12.0 * math.log2(f0_hz / ref)


def _frame_power(x: np.ndarray) -> np.ndarray:
    n = max(len(x) // FRAME, 1)
    x = np.pad(x, (0, max(n * FRAME - len(x), 0)))
    return np.mean(x[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12  # (n_frames,)


def estimate_snr(x: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(SNR estimate in dB, boolean mask of active 20 ms frames, noise power) — see the module docstring.

    The noise spectrum is a minimum-statistics estimate (after Martin 2001, simplified): per
    frequency bin, the 1st percentile over time of a 3-frame smoothed periodogram, divided by
    its bias for white noise. On espeak speech with white noise at 0/10/20 dB it reads about
    -1/9/18 dB; clean espeak clips read 30-45 dB. Speech rarely fills every bin at once, so this works on
    clips without pauses, where a frame-energy percentile would mistake speech for noise.
    """
    import librosa

    p = _frame_power(x)  # (n_frames,) at 20 ms
    spec = np.abs(librosa.stft(x.astype(np.float32), n_fft=512, hop_length=160, window="hann")) ** 2
    # spec: (257 bins, T frames)
    if spec.shape[1] > NOISE_SMOOTH:
        kernel = np.ones(NOISE_SMOOTH) / NOISE_SMOOTH
        spec = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, spec)
    floor = np.percentile(spec, NOISE_PERCENTILE, axis=1) / NOISE_BIAS  # (257,)
    # Parseval for Hann frames (one-sided spectrum): mean power = 2 * sum|X|^2 / (N * sum w^2)
    p_noise = float(2 * np.sum(floor) / (512 * np.sum(np.hanning(512) ** 2))) + 1e-12
    loud_enough = p > 10 ** (-50 / 10)
    active = (p > p_noise * 10 ** 0.6) & loud_enough
    if not active.any():  # stationary sound (a tone, pure noise): no frame stands out of the floor
        return 0.0, loud_enough, 0.0
    p_speech = float(np.mean(p[active])) - p_noise
    if p_speech <= 0:
        return 0.0, active, 0.0
    return float(min(10 * math.log10(p_speech / p_noise), SNR_CAP_DB)), active, p_noise


def estimate_pitch(x: np.ndarray, fmin: float = 60.0, fmax: float = 500.0) -> float | None:
    """Median F0 (Hz) of pyin's voiced frames; None when nothing is voiced."""
    import librosa

    if len(x) < 2048:
        x = np.pad(x, (0, 2048 - len(x)))
    f0, voiced, _ = librosa.pyin(x, fmin=fmin, fmax=fmax, sr=SR, frame_length=1024, hop_length=FRAME,
                                 center=True, resolution=PYIN_RESOLUTION)
    f0 = f0[voiced & np.isfinite(f0)]
    return float(np.median(f0)) if f0.size else None


def measure(x: np.ndarray, transcript: str | None = None, fmin: float = 60.0,
            fmax: float = 500.0, speech: bool | None = None) -> dict:
    """All attributes of one 16 kHz clip (see the module docstring for definitions).

    `speech=False`: the clip is known to hold no speech (no pitch or rate; level = RMS)."""
    import librosa

    x = np.asarray(x, dtype=np.float32)
    duration = len(x) / SR
    snr, active, p_noise = estimate_snr(x)
    p = _frame_power(x)
    # speech level: active-frame power less the noise estimate, so added noise does not read as loud
    loud = 10 * math.log10(max(float(np.mean(p[active])) - p_noise, 1e-12)) if active.any() else -120.0
    rms = 10 * math.log10(float(np.mean(x.astype(np.float64) ** 2)) + 1e-12)
    idx = np.flatnonzero(active)
    span = (idx[-1] - idx[0] + 1) * FRAME / SR if idx.size else 0.0
    if idx.size and (snr < RATE_MIN_SNR_DB or span < 0.5 * duration):
        span = duration  # the noise hides where speech starts/ends: use the whole clip
    words = len(transcript.split()) if transcript and transcript.strip() else 0
    if words and span > 0:
        rate, source = words / span, "transcript"
    elif span > 0:
        onsets = librosa.onset.onset_detect(y=x, sr=SR, hop_length=FRAME, units="frames")
        rate, source = len(onsets) / span / SYLLABLES_PER_WORD, "onsets"
    else:
        rate, source = 0.0, "none"
    pitch = estimate_pitch(x, fmin, fmax) if active.any() and speech is not False else None
    if speech is False:
        loud, rate, source = rms, None, "none"
    return {
        "duration_s": round(duration, 4),
        "pitch_hz": None if pitch is None else round(pitch, 2),
        "loudness_dbfs": round(loud, 2),
        "rms_dbfs": round(rms, 2),
        "rate_wps": None if rate is None else round(float(rate), 3),
        "rate_source": source,
        "snr_db": round(snr, 2),
        "silence_ratio": round(1.0 - float(active.mean()), 4),
    }


def bins_for(attrs: dict, gender: str | None = None, speech: bool | None = None) -> dict:
    """DeSTA-style bins for measured `attrs`; pitch is gender-aware when `gender` is known.

    `speech=False` (a clip without speech): pitch, speed and noise are None."""
    voice = speech is not False  # pitch, speed and an SNR are properties of speech
    pitch = attrs.get("pitch_hz") if voice else None
    return {
        "pitch": bin_value("pitch", semitones(pitch, gender)) if pitch else None,
        "speed": bin_value("speed", attrs.get("rate_wps")) if voice and attrs.get("rate_source") != "none" else None,
        "volume": bin_value("volume", attrs.get("loudness_dbfs")),
        "duration": bin_value("duration", attrs.get("duration_s")),
        "noise": bin_value("noise", -attrs["snr_db"]) if voice and attrs.get("snr_db") is not None else None,
    }


# Synthetic settings mapped onto the same labels, for `agreement` and for describing synthetic
# rows from their exact metadata. Edges are the espeak settings whose *measured* values fall on
# the BINS edges above, fitted on a 300-clip synthetic corpus (seed 1, espeak-ng 1.52, m1-m7 and
# f1-f5 variants): F0 ~= reference * 2**((0.158 * pitch - 9.7) / 12), i.e. espeak voices at
# their default pitch 50 sit ~2 semitones below the human references; median words/s ~= 0.0203
# * wpm over the active span; speech level ~= 20 * log10(volume / 100) - 19.3 dBFS (amplitude is
# proportional to espeak's volume; the offset refit on a second corpus, seed 2).
SETTING_EDGES = {
    "pitch": ("meta.pitch, espeak 0-99", (36, 52, 71, 87)),
    "speed": ("meta.rate, espeak words/min", (98, 133, 172, 212)),
    "volume": ("meta.volume, espeak 0-200", (29, 52, 92, 146)),
    "noise": ("-meta.snr_db (clean = no noise)", BINS["noise"][1]),
}


def setting_bins(meta: dict) -> dict:
    """Bins implied by a synthetic row's exact espeak settings (keys absent when unknown)."""
    out = {}
    for name, (_, edges) in SETTING_EDGES.items():
        key = {"pitch": "pitch", "speed": "rate", "volume": "volume", "noise": "snr_db"}[name]
        if key not in meta:
            continue
        value = meta[key]
        if name == "noise":
            value = -1e9 if value is None else -float(value)  # no noise = cleanest bin
        elif value is None:
            continue
        labels = BINS[name][2]
        out[name] = next((lab for e, lab in zip(edges, labels) if value < e), labels[-1])
    return out


def agreement(rows: list[dict]) -> dict:
    """Per attribute: how often the measured bin equals the bin of the known synthetic setting.

    Returns {attr: {n, exact, within_one, spearman}} over rows having both `meta` settings and
    measured `bins`; `spearman` correlates the setting with the measured value.
    """
    from scipy.stats import spearmanr

    measured_key = {"pitch": "pitch_hz", "speed": "rate_wps", "volume": "loudness_dbfs", "noise": "snr_db"}
    result = {}
    for name in SETTING_EDGES:
        labels = BINS[name][2]
        pairs, xs, ys = [], [], []
        for r in rows:
            meta, bins, attrs = r.get("meta") or {}, r.get("bins") or {}, r.get("attributes") or {}
            exp = setting_bins(meta).get(name)
            got = bins.get(name)
            if exp is None or got is None or meta.get("speakers", 1) != 1:
                continue
            pairs.append((labels.index(exp), labels.index(got)))
            setting = {"pitch": meta.get("pitch"), "speed": meta.get("rate"), "volume": meta.get("volume"),
                       "noise": 99.0 if meta.get("snr_db") is None else meta.get("snr_db")}[name]
            value = attrs.get(measured_key[name])
            if name == "pitch" and value:  # compare within gender: semitones from the reference
                value = semitones(value, meta.get("gender"))
            if value is not None:
                xs.append(setting)
                ys.append(value)
        n = len(pairs)
        rho = float(spearmanr(xs, ys).statistic) if len(xs) > 2 and len(set(xs)) > 1 else None
        result[name] = {
            "n": n,
            "exact": sum(a == b for a, b in pairs) / n if n else None,
            "within_one": sum(abs(a - b) <= 1 for a, b in pairs) / n if n else None,
            "spearman": None if rho is None or math.isnan(rho) else rho,
        }
    return result


def format_agreement(result: dict) -> str:
    """The agreement table as aligned text."""
    lines = [f"{'attribute':<10}{'n':>6}{'exact':>8}{'±1 bin':>8}{'spearman':>10}"]
    for name, r in result.items():
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"{name:<10}{r['n']:>6}{f(r['exact']):>8}{f(r['within_one']):>8}{f(r['spearman']):>10}")
    return "\n".join(lines)


def run_attributes(cfg, progress: bool = True) -> dict:
    """`data attributes`: add `attributes` and `bins` to every row of `cfg.input` (resumable)."""
    import sys

    from tqdm import tqdm

    if not cfg.input or not cfg.output:
        raise ConfigError("input/output: give --input corpus.jsonl and --output attributes.jsonl")
    with RejectLog(cfg.output, "attributes", cfg.strict) as rejects:
        todo, skipped = pending_rows(cfg, rejects, "attributes")
        written = 0
        with JsonlAppender(cfg.output) as out:
            for row in tqdm(todo, desc="attributes", unit="clip", disable=not progress, file=sys.stderr):
                repairs: list[str] = []
                try:
                    x = load_audio(audio_path(row, cfg.input), max_seconds=cfg.max_seconds,
                                   allow_silence=False, repairs=repairs)
                except AudioError as e:
                    rejects.add(str(e), id=row["id"], source=str(cfg.input))
                    continue
                meta = row.get("meta") or {}
                attrs = measure(x, row.get("transcript"), cfg.fmin, cfg.fmax, speech=meta.get("speech"))
                row = dict(rebase_audio(row, cfg.input, cfg.output), attributes=attrs,
                           bins=bins_for(attrs, meta.get("gender"), speech=meta.get("speech")))
                if repairs:
                    row["audio_repairs"] = repairs
                out.write(row)
                written += 1
        line = summary("attributes", written, skipped, rejects, cfg.output)
        return {"written": written, "skipped": skipped, "rejected": dict(rejects.counts),
                "summary": line}
