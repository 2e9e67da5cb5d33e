"""data_prep.augment: each step does what its recorded plan says, seeded; describe states reverb."""

import numpy as np
import pytest

from data_prep import augment as A
from data_prep.describe import describe_row
from data_prep.augment import active_power
from speech_adapter.config import from_dict
from speech_adapter.errors import ConfigError

SR = 16000


def speech_like(seconds=1.0, seed=0):
    """A 150 Hz harmonic tone with syllable-rate on/off gating: speech-like level and pauses."""
    t = np.arange(int(SR * seconds)) / SR
    x = sum(np.sin(2 * np.pi * k * 150 * t) / k for k in range(1, 8))
    gate = (np.sin(2 * np.pi * 4 * t) > -0.3).astype(float)
    return (0.3 * x * gate / np.max(np.abs(x))).astype(np.float32)


def band_energy(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum() / spec.sum())


def test_plan_is_seeded_and_records_only_what_applies():
    cfg = A.AugmentConfig(p_reverb=0.5, p_noise=0.5, p_telephone=0.5, p_mp3=0.5, p_gain=0.5, p_silence=0.5)
    plans = [A.plan_augment(cfg, np.random.default_rng([1, i])) for i in range(200)]
    assert plans == [A.plan_augment(cfg, np.random.default_rng([1, i])) for i in range(200)]
    for key in ("reverb", "noise", "telephone", "mp3_kbps", "gain_db", "silence_s"):
        assert 60 < sum(key in p for p in plans) < 140, key
    assert A.plan_augment(A.AugmentConfig(), np.random.default_rng(0)) == {}
    assert not A.AugmentConfig().enabled and cfg.enabled
    # one probability changed: the other steps keep their draws
    more = A.AugmentConfig(p_reverb=0.5, p_noise=1.0, p_telephone=0.5, p_mp3=0.5, p_gain=0.5, p_silence=0.5)
    for i, p in enumerate(plans):
        q = A.plan_augment(more, np.random.default_rng([1, i]))
        assert q.get("reverb") == p.get("reverb") and q.get("gain_db") == p.get("gain_db")


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr", [0.0, 20.0])
def test_noise_is_added_at_the_recorded_snr(color, snr):
    x = speech_like()
    y = A.apply_augment(x, SR, {"noise": {"color": color, "snr_db": snr, "seed": 3}})
    measured = 10 * np.log10(active_power(x) / np.mean((y - x).astype(np.float64) ** 2))
    assert abs(measured - snr) < 0.3
    lo, hi = {"white": (0.0, 0.1), "pink": (0.5, 0.85), "brown": (0.95, 1.0)}[color]
    assert lo < band_energy(y - x, 0, 500) <= hi  # share below 500 Hz: 1/16, ln 500 / ln 8000, ~all


def test_reverb_adds_a_decaying_tail_that_grows_with_rt60():
    x = np.zeros(SR // 2, np.float32)
    x[:800] = speech_like(0.05)  # a 50 ms burst, then silence
    tails = []
    for rt60 in (0.2, 0.8):
        y = A.reverb(x, SR, rt60, [6.0, 5.0, 3.0], [2.0, 2.0, 1.5], [4.0, 3.5, 1.6])
        assert len(y) == len(x) + int(A.REVERB_TAIL_S * SR)
        tails.append(float(np.mean(y[2400:4000] ** 2) / np.mean(y[:800] ** 2)))  # 150-250 ms after onset
    assert tails[1] > 3 * tails[0] > 0


def test_telephone_keeps_the_voice_band_only():
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    y = A.telephone(x, SR)
    assert len(y) == len(x)
    assert band_energy(y, 4000, 8000) < 0.001 and band_energy(y, 0, 150) < 0.01
    assert band_energy(x, 4000, 8000) > 0.4


def test_mp3_round_trip_is_aligned_and_lossy():
    x = speech_like()
    y = A.mp3_round_trip(x, SR, 32)
    assert len(y) == len(x)
    corr = float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)))
    assert 0.9 < corr < 0.99999


def test_gain_silences_and_limiter():
    x = speech_like()
    y = A.apply_augment(x, SR, {"gain_db": -6.0, "silence_s": [0.25, 0.1]})
    assert len(y) == len(x) + 4000 + 1600 and not y[:4000].any() and not y[-1600:].any()
    assert np.allclose(y[4000:4000 + len(x)], x * 10 ** (-6 / 20), atol=1e-6)
    loud = A.apply_augment(x, SR, {"gain_db": 20.0})
    assert abs(float(np.max(np.abs(loud))) - 1.0) < 1e-6  # limited, not clipped
    assert np.allclose(loud / np.max(np.abs(loud)), x / np.max(np.abs(x)), atol=1e-5)


@pytest.mark.parametrize("data, msg", [
    ({"p_mp3": 0.5, "mp3_kbps": [33]}, "mp3_kbps"),
    ({"noise_colors": ["blue"]}, "noise_colors"),
    ({"rt60_min": 0.9, "rt60_max": 0.5}, "rt60_min"),
    ({"p_gain": -0.1}, "p_gain"),
])
def test_validation_names_the_key(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(A.AugmentConfig, data)


def test_describe_states_reverb_only_where_it_is_known():
    row = {"transcript": "Hello there.", "duration": 1.2, "meta": {"gender": "male", "augment": {"reverb": {}}}}
    assert describe_row(row, ["gender", "reverb"]).endswith("(Gender: Male, Room: Reverberant)")
    row["meta"]["augment"] = {"gain_db": -3.0}
    assert describe_row(row, ["reverb"]).endswith("(Room: Dry)")
    del row["meta"]["augment"]
    assert describe_row(row, ["reverb"]) == "[00:00-00:01] Hello there."
