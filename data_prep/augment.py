"""Acoustic augmentation of synthetic clips, seeded per clip and recorded in the row's meta.

For training speech that transfers to real recordings (the sim-to-real issue): room reverb from
pyroomacoustics image-source RIRs (Allen & Berkley 1979; absorption from Sabine's formula for a
drawn RT60), coloured background noise at a known SNR (the SNR definition `data_prep.synth`
uses), a telephone channel (300-3400 Hz band, 8 kHz round trip), an mp3 round trip through
`lameenc` (read back by libsndfile), gain, and short leading/trailing silences.

audiomentations covers most of these but pins soxr < 1 (this project resamples with soxr 1.x),
and its transforms here would be thin wrappers of the same calls; the libraries doing the real
work (pyroomacoustics, lameenc, scipy, soxr) are used directly.

`plan_augment(cfg, rng)` draws every choice first (a pure function of the config and the rng,
so the meta describes the audio exactly); `apply_augment(x, sr, plan)` renders it. The plan is
what `meta.augment` records: {} when nothing was applied; keys only for the steps applied.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from speech_adapter.config import help_field
from speech_adapter.errors import ConfigError

NOISE_COLORS = ("white", "pink", "brown")
FRAME = 320  # 20 ms at 16 kHz
ACTIVE_DBFS = -50.0  # frames above this count as speech when defining the SNR
MAX_ISM_ORDER = 40  # image-source order cap: RT60 0.9 s needs ~115 (3 s a clip); 40 keeps it ~0.1 s
REVERB_TAIL_S = 0.3  # the reverberant tail kept after the dry clip's end



def active_power(x: np.ndarray, frame: int = FRAME, floor_dbfs: float = ACTIVE_DBFS) -> float:
    """Mean power of the frames above `floor_dbfs` (the speech level; 0.0 if none)."""
    n = len(x) // frame
    if n == 0:
        return float(np.mean(x ** 2)) if len(x) else 0.0
    p = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)  # (n_frames,)
    active = p[p > 10 ** (floor_dbfs / 10)]
    return float(active.mean()) if active.size else 0.0


@dataclasses.dataclass
class AugmentConfig:
    """Augmentation of synthetic clips (each step drawn per clip from the clip's seed)."""

    p_reverb: float = help_field(0.0, "probability of room reverb (pyroomacoustics shoebox RIR)")
    rt60_min: float = help_field(0.2, "RT60 range of the drawn rooms, seconds")
    rt60_max: float = help_field(0.8, "upper end of the RT60 range, seconds")
    p_noise: float = help_field(0.0, "probability of coloured background noise at a drawn SNR")
    noise_colors: list[str] = help_field(default_factory=lambda: list(NOISE_COLORS),
                                         help="noise spectra drawn from: white, pink (1/f), brown (1/f^2)")
    snr_min: float = help_field(0.0, "background-noise SNR range, dB (speech active power / noise power)")
    snr_max: float = help_field(30.0, "upper end of the SNR range, dB")
    p_telephone: float = help_field(0.0, "probability of a telephone channel (300-3400 Hz, 8 kHz)")
    p_mp3: float = help_field(0.0, "probability of an mp3 round trip (lameenc)")
    mp3_kbps: list[int] = help_field(default_factory=lambda: [16, 32, 64], help="mp3 bitrates drawn from, kbit/s")
    p_gain: float = help_field(0.0, "probability of a gain change (peaks are then limited to 0 dBFS)")
    gain_db_min: float = help_field(-18.0, "gain range, dB")
    gain_db_max: float = help_field(6.0, "upper end of the gain range, dB")
    p_silence: float = help_field(0.0, "probability of leading/trailing silence added")
    silence_max_s: float = help_field(0.5, "longest silence added at each end, seconds")

    def validate(self):
        for name in ("p_reverb", "p_noise", "p_telephone", "p_mp3", "p_gain", "p_silence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: must be a probability in [0, 1]")
        for lo, hi in (("rt60_min", "rt60_max"), ("snr_min", "snr_max"), ("gain_db_min", "gain_db_max")):
            if getattr(self, lo) > getattr(self, hi):
                raise ConfigError(f"{lo}: {getattr(self, lo)} is above {hi}={getattr(self, hi)}")
        if self.rt60_min <= 0.05:
            raise ConfigError(f"rt60_min: {self.rt60_min} s is too short for a room (> 0.05)")
        bad = [c for c in self.noise_colors if c not in NOISE_COLORS]
        if bad or (self.p_noise > 0 and not self.noise_colors):
            raise ConfigError(f"noise_colors: {bad or 'empty'}; choose from {list(NOISE_COLORS)}")
        if self.p_mp3 > 0 and (not self.mp3_kbps or any(k not in (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128,
                                                                     160, 192, 224, 256, 320) for k in self.mp3_kbps)):
            raise ConfigError(f"mp3_kbps: {self.mp3_kbps} are not all mp3 bitrates (8..320 kbit/s)")
        if self.silence_max_s < 0:
            raise ConfigError("silence_max_s: must be >= 0")

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f"p_{k}") > 0 for k in ("reverb", "noise", "telephone", "mp3", "gain", "silence"))


def plan_augment(cfg: AugmentConfig, rng: np.random.Generator) -> dict:
    """Every augmentation choice for one clip (JSON-able; {} when nothing applies).

    Draws the same number of values whatever applies, so changing one probability does not
    reshuffle the other steps' draws.
    """
    u = rng.random(6)
    plan: dict = {}
    room = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])  # shoebox L, W, H in metres
    rel = rng.uniform(0.15, 0.85, size=(2, 3))  # source and microphone, as fractions of the room
    rt60 = float(rng.uniform(cfg.rt60_min, cfg.rt60_max))
    color = str(rng.choice(cfg.noise_colors)) if cfg.noise_colors else "white"
    snr = float(rng.uniform(cfg.snr_min, cfg.snr_max))
    kbps = int(rng.choice(cfg.mp3_kbps)) if cfg.mp3_kbps else 32
    gain = float(rng.uniform(cfg.gain_db_min, cfg.gain_db_max))
    silence = rng.uniform(0.0, cfg.silence_max_s, size=2)
    seed = int(rng.integers(2**31))
    if u[0] < cfg.p_reverb:
        plan["reverb"] = {"rt60_s": round(rt60, 3), "room_m": [round(float(v), 2) for v in room],
                          "source_m": [round(float(v), 2) for v in rel[0] * room],
                          "mic_m": [round(float(v), 2) for v in rel[1] * room]}
    if u[1] < cfg.p_silence:
        plan["silence_s"] = [round(float(s), 3) for s in silence]
    if u[2] < cfg.p_noise:
        plan["noise"] = {"color": color, "snr_db": round(snr, 1), "seed": seed}
    if u[3] < cfg.p_telephone:
        plan["telephone"] = True
    if u[4] < cfg.p_mp3:
        plan["mp3_kbps"] = kbps
    if u[5] < cfg.p_gain:
        plan["gain_db"] = round(gain, 2)
    return plan


def apply_augment(x: np.ndarray, sr: int, plan: dict) -> np.ndarray:
    """Render `plan` on the clean clip `x` (float32 mono at `sr`); returns float32 in [-1, 1].

    Order: reverb, silences, noise, telephone, mp3, gain (then a limiter at 0 dBFS).
    """
    x = np.asarray(x, np.float32)
    if "reverb" in plan:
        x = reverb(x, sr, **plan["reverb"])
    if "silence_s" in plan:
        head, tail = (np.zeros(int(s * sr), np.float32) for s in plan["silence_s"])
        x = np.concatenate([head, x, tail])
    if "noise" in plan:
        n = plan["noise"]
        noise = colored_noise(len(x), n["color"], np.random.default_rng(n["seed"]))
        p_noise = active_power(x) / 10 ** (n["snr_db"] / 10)
        x = x + noise * np.float32(np.sqrt(p_noise))
    if plan.get("telephone"):
        x = telephone(x, sr)
    if "mp3_kbps" in plan:
        x = mp3_round_trip(x, sr, plan["mp3_kbps"])
    if "gain_db" in plan:
        x = x * np.float32(10 ** (plan["gain_db"] / 20))
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 1.0:  # a limiter, not a clip: the meta's SNR and gain stay what they say up to this scale
        x = x / peak
    return x.astype(np.float32)


def reverb(x: np.ndarray, sr: int, rt60_s: float, room_m, source_m, mic_m) -> np.ndarray:
    """`x` in a shoebox room: convolved with its image-source RIR, direct path at t=0, the
    reverberant tail kept for `REVERB_TAIL_S`, active power kept equal to the dry clip's."""
    import pyroomacoustics as pra
    from scipy.signal import fftconvolve

    absorption, order = pra.inverse_sabine(rt60_s, room_m)
    room = pra.ShoeBox(room_m, fs=sr, materials=pra.Material(absorption), max_order=min(order, MAX_ISM_ORDER))
    room.add_source(source_m)
    room.add_microphone(mic_m)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], np.float64)
    rir = rir[int(np.argmax(np.abs(rir))):]  # (L,) from the direct path on
    y = fftconvolve(x.astype(np.float64), rir)[: len(x) + int(REVERB_TAIL_S * sr)]  # (T + tail,)
    p_dry, p_wet = active_power(x), active_power(y)
    if p_wet > 0:
        y *= np.sqrt(p_dry / p_wet)
    return y.astype(np.float32)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with a 1/f^k power spectrum (white k=0, pink 1, brown 2)."""
    k = {"white": 0, "pink": 1, "brown": 2}[color]
    white = rng.standard_normal(n)
    if k == 0 or n < 2:
        return white.astype(np.float32)
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = f[1]  # no infinite DC gain
    y = np.fft.irfft(spec / f ** (k / 2), n)
    return (y / np.sqrt(np.mean(y ** 2))).astype(np.float32)


def telephone(x: np.ndarray, sr: int) -> np.ndarray:
    """A narrowband telephone channel: 300-3400 Hz band-pass and an 8 kHz round trip."""
    import soxr
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [300, 3400], btype="bandpass", fs=sr, output="sos")
    y = sosfiltfilt(sos, x.astype(np.float64))
    if sr != 8000:
        y = soxr.resample(soxr.resample(y, sr, 8000, quality="HQ"), 8000, sr, quality="HQ")[: len(x)]
    return np.asarray(y, np.float32)


def mp3_round_trip(x: np.ndarray, sr: int, kbps: int) -> np.ndarray:
    """Encode with LAME at `kbps`, decode with libsndfile, align to `x` (the codec delay removed)."""
    import lameenc
    import soundfile as sf

    enc = lameenc.Encoder()
    enc.set_bit_rate(kbps)
    enc.set_in_sample_rate(sr)
    enc.set_channels(1)
    enc.set_quality(2)
    pcm = (np.clip(x, -1.0, 1.0) * 32767).astype("<i2")
    data = enc.encode(pcm.tobytes()) + enc.flush()
    y, _ = sf.read(io.BytesIO(data), dtype="float32")
    y = y if y.ndim == 1 else y[:, 0]
    lag = _delay(x, y, max_lag=4096)
    y = y[lag: lag + len(x)]
    return np.pad(y, (0, len(x) - len(y))).astype(np.float32)


def _delay(x: np.ndarray, y: np.ndarray, max_lag: int) -> int:
    """The lag (0..max_lag samples) at which `y` best matches `x` (cross-correlation)."""
    from scipy.signal import correlate

    n = min(len(x), len(y) - max_lag) if len(y) > max_lag else 0
    if n <= 0:
        return 0
    c = correlate(y[: n + max_lag], x[:n], mode="valid")  # (max_lag + 1,)
    return int(np.argmax(c))
