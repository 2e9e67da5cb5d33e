"""serve's HTTP API: the official openai client against it, streaming, limits and JSON errors,
an API key, queued concurrent requests, and bounded admission."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serve.conftest import MAX_AUDIO_S, SERVED, audio_message, encoded, make_config

openai = pytest.importorskip("openai")

QUESTION = "What can you hear?"
MAX_TOKENS = 8


def client(url: str, key: str = "unused"):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def expected(model, tmp_path, data: str, question: str = QUESTION, fmt: str = "wav") -> str:
    """The Python API's reply to the same clip bytes."""
    path = tmp_path / f"same.{fmt}"
    path.write_bytes(base64.b64decode(data))
    return model.ask(path, question, max_new_tokens=MAX_TOKENS)


def post(url: str, body, **kw) -> httpx.Response:
    content = json.dumps(body) if isinstance(body, dict) else body
    return httpx.post(f"{url}/v1/chat/completions", content=content, timeout=60,
                      headers={"Content-Type": "application/json"}, **kw)


def body(**kw) -> dict:
    return {"model": SERVED, "messages": audio_message(encoded()), "max_tokens": MAX_TOKENS, **kw}


def test_openai_client_reply_matches_the_python_api(server, model, tmp_path):
    data = encoded(seed=2)
    r = client(server).chat.completions.create(model=SERVED, messages=audio_message(data), max_tokens=MAX_TOKENS)
    assert r.model == SERVED and r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == expected(model, tmp_path, data)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 4  # the prompt holds the clip's audio tokens, not just text
    n = r.usage.completion_tokens
    assert 0 < n <= MAX_TOKENS and (r.choices[0].finish_reason == "length") == (n == MAX_TOKENS)


def test_repetition_penalty_reaches_the_decoder(server, model, tmp_path):
    data = encoded(seed=2)
    replies = []
    for penalty in (1.0, 10.0):
        r = post(server, body(messages=audio_message(data), repetition_penalty=penalty, max_tokens=24))
        assert r.status_code == 200, r.text
        replies.append(r.json()["choices"][0]["message"]["content"])
        path = tmp_path / "same.wav"
        path.write_bytes(base64.b64decode(data))
        assert replies[-1] == model.ask(path, QUESTION, max_new_tokens=24, repetition_penalty=penalty)
    assert replies[0] != replies[1]  # the tiny model's reply repeats itself without the penalty


def test_openai_stream_arrives_in_pieces_and_joins_to_the_same_reply(server):
    c = client(server)
    whole = c.chat.completions.create(model=SERVED, messages=audio_message(encoded()), max_tokens=MAX_TOKENS)
    chunks = list(c.chat.completions.create(model=SERVED, messages=audio_message(encoded()),
                                            max_tokens=MAX_TOKENS, stream=True))
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices[0].delta.content]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(pieces) >= 2
    assert "".join(pieces).strip() == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert len({ch.id for ch in chunks}) == 1


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_flac_and_mp3_clips(server, model, tmp_path, fmt):
    data = encoded(fmt=fmt)
    r = client(server).chat.completions.create(model=SERVED, messages=audio_message(data, fmt=fmt),
                                               max_tokens=MAX_TOKENS)
    assert r.choices[0].message.content == expected(model, tmp_path, data, fmt=fmt)


def test_history_is_the_conversation_the_python_api_keeps(server, model, tmp_path):
    from speech_adapter.inference.api import Conversation

    data = encoded(seed=3)
    path = tmp_path / "c.wav"
    path.write_bytes(base64.b64decode(data))
    conv = Conversation(model)
    conv.add_audio(path)
    first = conv.ask(QUESTION, max_new_tokens=MAX_TOKENS)
    second = conv.ask("Say it again.", max_new_tokens=MAX_TOKENS)
    messages = audio_message(data) + [{"role": "assistant", "content": first},
                                      {"role": "user", "content": "Say it again."}]
    r = client(server).chat.completions.create(model=SERVED, messages=messages, max_tokens=MAX_TOKENS)
    assert r.choices[0].message.content == second


def test_models_health_and_page(server):
    c = client(server)
    assert [m.id for m in c.models.list().data] == [SERVED]
    assert c.models.retrieve(SERVED).id == SERVED
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["model"] == SERVED and health["auth"] is False
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="record"' in page.text and 'id="file"' in page.text


def _two_clips() -> list[dict]:
    half = encoded(seconds=MAX_AUDIO_S * 0.6)
    part = {"type": "input_audio", "input_audio": {"data": half, "format": "wav"}}
    return [{"role": "user", "content": [part, part, {"type": "text", "text": QUESTION}]}]


def _audio_part(**spec) -> list[dict]:
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": spec}]}]


# (case, request body or raw bytes, status, code, words the message must contain)
ERRORS = [
    ("bad_base64", body(messages=_audio_part(data="not base64 at all!", format="wav")), 400, "invalid_base64",
     "messages[0].content[0].input_audio.data"),
    ("not_audio", body(messages=_audio_part(data=base64.b64encode(b"just text " * 100).decode(), format="wav")),
     400, "invalid_audio", "not a readable audio file"),
    ("too_long", body(messages=audio_message(encoded(seconds=MAX_AUDIO_S + 1))), 400, "audio_too_long", "too long"),
    ("too_long_together", body(messages=_two_clips()), 400, "audio_too_long", "messages[0].content[1]"),
    ("unknown_model", body(model="gpt-4o-audio-preview"), 404, "model_not_found", "gpt-4o-audio-preview"),
    ("format", body(messages=_audio_part(data=encoded(), format="ogg")), 400, "unsupported_audio_format", "ogg"),
    ("image", body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     400, "unsupported_content", "image_url"),
    ("max_tokens_0", body(max_tokens=0), 400, "invalid_value", "max_tokens"),
    ("max_tokens_over_limit", body(max_tokens=10**6), 400, "invalid_value", "max_tokens"),
    ("temperature", body(temperature=-1), 400, "invalid_value", "temperature"),
    ("repetition_penalty", body(repetition_penalty=0), 400, "invalid_value", "repetition_penalty"),
    ("ends_with_assistant", body(messages=audio_message(encoded()) + [{"role": "assistant", "content": "hi"}]),
     400, "invalid_value", "last message"),
    ("not_json", b"{not json", 400, "invalid_json", "not valid JSON"),
    ("placeholder_in_text", body(messages=audio_message(encoded(), text="<|AUDIO|> what?")), 400,
     "invalid_request", "placeholder"),
]


@pytest.mark.parametrize("request_body,status,code,words", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_are_openai_shaped_json(server, request_body, status, code, words):
    r = post(server, request_body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and words in err["message"]


def test_openai_client_raises_the_servers_message(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        c.chat.completions.create(model="other", messages=audio_message(encoded()))
    with pytest.raises(openai.BadRequestError, match="not valid base64"):
        c.chat.completions.create(model=SERVED, messages=_audio_part(data="%%%", format="wav"))


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_request_size_limit(server, chunked):
    big = json.dumps(body(padding="x" * (1024 * 1024 + 10))).encode()
    content = (big[i:i + 65536] for i in range(0, len(big), 65536)) if chunked else big
    r = post(server, content)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_api_key(no_network, export_dir, model):
    from speech_adapter.serve.app import create_app
    from speech_adapter.serve.server import background

    with background(create_app(model, make_config(export_dir, api_key="s3cret"), SERVED)) as url:
        for key in (None, "wrong"):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            r = httpx.get(f"{url}/v1/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").models.list()
        r = client(url, "s3cret").chat.completions.create(model=SERVED, messages=audio_message(encoded()),
                                                          max_tokens=MAX_TOKENS)
        assert r.choices[0].message.content
        assert httpx.get(f"{url}/health").json()["auth"] is True  # the page learns it needs a key
        assert httpx.get(f"{url}/").status_code == 200


def test_concurrent_requests_queue_and_each_gets_its_own_reply(server, model, tmp_path):
    seeds = [0, 1, 2, 3, 4, 5]
    want = {s: expected(model, tmp_path, encoded(seed=s)) for s in seeds}
    c = client(server)

    def one(seed: int) -> str:
        kw = {"model": SERVED, "messages": audio_message(encoded(seed=seed)), "max_tokens": MAX_TOKENS}
        if seed % 2:  # half of them stream
            return "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(stream=True, **kw)).strip()
        return c.chat.completions.create(**kw).choices[0].message.content

    with ThreadPoolExecutor(len(seeds)) as pool:
        got = dict(zip(seeds, pool.map(one, seeds)))
    assert got == want
    assert httpx.get(f"{server}/health").json()["pending"] == 0


def test_admission_is_bounded_and_slots_come_back(no_network, export_dir, model):
    from speech_adapter.serve.app import create_app
    from speech_adapter.serve.server import background

    app = create_app(model, make_config(export_dir, max_pending=1), SERVED)
    engine = app.state.engine
    release, started = threading.Event(), threading.Event()
    generate = engine._generate

    def held(*args):  # the first generation waits until the test lets it go
        started.set()
        release.wait(30)
        return generate(*args)

    engine._generate = held
    with background(app) as url:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, url, body())
            assert started.wait(30)
            busy = post(url, body())
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_busy"
            release.set()
            assert first.result().status_code == 200
        assert post(url, body()).status_code == 200
        # a streaming client that leaves early gives its slot back
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body(stream=True, max_tokens=200), timeout=60) as r:
            assert r.status_code == 200
            next(r.iter_lines())
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["pending"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{url}/health").json()["pending"] == 0
        assert post(url, body()).status_code == 200
