"""serve's page in a real headless Chromium: upload a clip (or record one from Chromium's fake
microphone), ask, read the reply as it streams in; a screenshot is kept in tmp_path."""

from __future__ import annotations

import base64
import time

import pytest

from tests.serve.conftest import SERVED, encoded
from tests.serve.page_driver import ask_on_page, chromium_path, launch

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install chromium)")

MAX_TOKENS = 16
QUESTION = "What can you hear?"


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as pw:
        browser = launch(pw)
        yield browser.new_page(viewport={"width": 900, "height": 760})
        browser.close()


def test_upload_ask_and_read_the_streamed_reply(server, page, model, tmp_path, monkeypatch):
    # the tiny model writes its 16 tokens in milliseconds, and on a fast host the browser can read
    # them all in one network chunk (one repaint, though the server streamed); pace the tokens as
    # a real model's are paced, so "it grew more than once" tests the page and not the host
    stream = model.stream

    def paced(*args, **kwargs):
        for token in stream(*args, **kwargs):
            time.sleep(0.05)
            yield token

    monkeypatch.setattr(model, "stream", paced)
    data = encoded(seconds=1.5, seed=5)
    wav = tmp_path / "clip.wav"
    wav.write_bytes(base64.b64decode(data))
    shown = ask_on_page(page, server, QUESTION, wav=wav, max_tokens=MAX_TOKENS)
    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)

    assert shown["model"] == SERVED
    assert shown["duration"] == "1.5 s"
    assert shown["status"].startswith("Done"), shown["status"]
    # the page re-encodes the clip as 16 kHz 16-bit WAV without changing a sample: same reply
    assert shown["reply"].strip() == model.ask(wav, QUESTION, max_new_tokens=MAX_TOKENS)
    assert shown["updates"] >= 2  # it streamed in, not all at once
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:4] == b"\x89PNG"


def test_record_from_the_microphone_and_ask(server, page):
    shown = ask_on_page(page, server, QUESTION, record_s=1.2, max_tokens=MAX_TOKENS)
    seconds = float(shown["duration"].removesuffix(" s"))
    assert 0.5 <= seconds <= 3.0
    assert shown["status"].startswith("Done") and shown["reply"].strip()


def test_a_refused_request_shows_the_servers_message(server, page, tmp_path):
    long_wav = tmp_path / "long.wav"
    long_wav.write_bytes(base64.b64decode(encoded(seconds=6.0)))  # over the test server's 5 s limit
    shown = ask_on_page(page, server, QUESTION, wav=long_wav, max_tokens=MAX_TOKENS)
    assert shown["status"].startswith("Error") and "too long" in shown["status"]
    assert shown["reply"] == ""
