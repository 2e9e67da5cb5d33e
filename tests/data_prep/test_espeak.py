"""data_prep.espeak: the ctypes binding to the bundled espeak-ng."""

import threading

import numpy as np
import pytest

from data_prep import espeak
from speech_adapter.errors import ConfigError


def test_synthesize_returns_float_audio_at_22050():
    audio, sr = espeak.synthesize("Hello there.", voice="en-us+f3")
    assert sr == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.3 < len(audio) / sr < 3.0
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_rate_and_volume_change_the_audio():
    text = "The quick brown fox jumps over the lazy dog."
    slow, _ = espeak.synthesize(text, rate=100)
    fast, _ = espeak.synthesize(text, rate=300)
    assert len(slow) > 1.8 * len(fast)
    quiet, _ = espeak.synthesize(text, volume=30)
    loud, _ = espeak.synthesize(text, volume=120)
    assert np.sqrt(np.mean(loud ** 2)) > 2.5 * np.sqrt(np.mean(quiet ** 2))


def test_same_call_is_deterministic_and_thread_safe():
    ref, _ = espeak.synthesize("Seven times eight is fifty six.", voice="en-gb+m3", pitch=40)
    outs = []

    def work():
        outs.append(espeak.synthesize("Seven times eight is fifty six.", voice="en-gb+m3", pitch=40)[0])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(ref, o) for o in outs)


def test_voices_and_variants_from_bundled_data():
    codes = espeak.language_codes()
    for code in ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc", "fr", "de", "es"):
        assert code in codes
    assert espeak.variant_gender("en-us+f3") == "female"
    assert espeak.variant_gender("en-us+m3") == "male"
    assert espeak.accent_name("en-gb-scotland") == "Scottish English"


@pytest.mark.parametrize("kwargs, msg", [
    ({"voice": "en-uss"}, "did you mean 'en-us'"),
    ({"voice": "en-us+f9"}, "unknown variant 'f9'"),
    ({"rate": 10}, "rate=10 is outside"),
    ({"pitch": 120}, "pitch=120"),
    ({"volume": -1}, "volume=-1"),
])
def test_bad_settings_raise_config_error(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        espeak.synthesize("hi", **kwargs)


def test_empty_text_gives_no_samples():
    audio, _ = espeak.synthesize("   ")
    assert audio.size == 0


def test_same_call_gives_same_samples_whatever_was_spoken_before():
    ref, _ = espeak.synthesize("Hello there my friend, how are you.", rate=235)
    espeak.synthesize("Etwas ganz anderes.", voice="de+f2", rate=90, pitch=5)
    again, _ = espeak.synthesize("Hello there my friend, how are you.", rate=235)
    assert np.array_equal(ref, again)


def test_accent_names_are_the_eval_answer_options():
    from speech_adapter.templates import ACCENTS

    assert set(espeak.ENGLISH_ACCENTS.values()) <= set(ACCENTS)
