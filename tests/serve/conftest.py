"""A tiny random-weight export served on 127.0.0.1 for the serve tests, with the network blocked."""

from __future__ import annotations

import base64
import io

import pytest

from tests.inference.export_fixtures import clip, perturbed_tiny, write_wav

SERVED = "tiny-export"
MAX_AUDIO_S = 5.0
MAX_REQUEST_MB = 1.0


@pytest.fixture(scope="session")
def no_network():
    """Any connection beyond loopback raises while the serve tests run."""
    from speech_adapter.utils.safety import block_network

    with block_network():
        yield


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve") / SERVED
    perturbed_tiny().save_adapter(d)
    return d


@pytest.fixture(scope="session")
def model(export_dir):
    from speech_adapter.inference.api import load

    return load(export_dir)


def make_config(export_dir, **kw):
    from speech_adapter.serve.config import ServeConfig

    kw = {"model": str(export_dir), "max_audio_seconds": MAX_AUDIO_S, "max_request_mb": MAX_REQUEST_MB,
          "default_max_tokens": 8, **kw}
    config = ServeConfig(**kw)
    config.validate()
    return config


@pytest.fixture(scope="session")
def server(no_network, export_dir, model):
    """Base URL of the shared server (no API key)."""
    from speech_adapter.serve.app import create_app
    from speech_adapter.serve.server import background

    with background(create_app(model, make_config(export_dir), SERVED)) as url:
        yield url


@pytest.fixture(scope="session")
def wav_file(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("clips") / "clip.wav", seconds=1.5, seed=1)


def encoded(seconds: float = 1.5, seed: int = 1, fmt: str = "wav") -> str:
    """Base64 of a synthetic clip in `fmt` (16-bit PCM for wav and flac)."""
    import soundfile as sf

    buf = io.BytesIO()
    subtype = {"mp3": "MPEG_LAYER_III"}.get(fmt, "PCM_16")
    sf.write(buf, clip(seconds, seed), 16000, format=fmt.upper(), subtype=subtype)
    return base64.b64encode(buf.getvalue()).decode()


def audio_message(data: str, text: str = "What can you hear?", fmt: str = "wav") -> list[dict]:
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": fmt}},
                                         {"type": "text", "text": text}]}]
