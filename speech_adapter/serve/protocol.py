"""OpenAI chat-completions on the wire: request -> `ChatRequest`, JSON errors, response shapes.

Follows OpenAI's audio-input format (`{"type": "input_audio", "input_audio": {"data": BASE64,
"format": "wav"}}`), as vLLM serves Ultravox and DeSTA2.5-Audio. A user message's text parts
join into its instruction and its audio parts become its clips, in order; the prompt layout is
the one the adapter was trained with (`Conversation`), wherever the parts stand in the message.
`system` / `developer` messages set the system prompt (default: the export's own). Audio is
decoded and checked by `audio.load_audio`, the one validator every entry point shares.
Errors are OpenAI-shaped: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speech_adapter.audio import SAMPLE_RATE, load_audio
from speech_adapter.errors import AudioError
from speech_adapter.prompts import REPETITION_PENALTY
from speech_adapter.serve.config import ServeConfig

AUDIO_FORMATS = ("wav", "mp3", "flac")
ROLES = ("system", "developer", "user", "assistant")


class APIError(Exception):
    """An error answered as OpenAI's JSON error body with an HTTP status."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict:
        kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
                503: "server_busy"}.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def bad(message: str, code: str, param: str | None = None) -> APIError:
    return APIError(400, message, code, param)


@dataclass
class UserTurn:
    instruction: str
    clips: list[np.ndarray] = field(default_factory=list)  # each a 16 kHz mono float32 clip


@dataclass
class ChatRequest:
    """A validated request: the conversation (last turn is the user's question) and the sampling."""

    model: str
    system: object  # str | None, or api.USE_DEFAULT
    turns: list  # UserTurn | str (an assistant reply), alternating, ending in a UserTurn
    gen: dict  # max_new_tokens, temperature, top_p, seed, repetition_penalty
    stream: bool
    audio_seconds: float


# ---- audio ---------------------------------------------------------------------------------------

def decode_audio(part: dict, where: str, seconds_left: float) -> np.ndarray:
    """An `input_audio` part -> 16 kHz mono float32, refusing bad base64, non-audio and too long."""
    spec = part.get("input_audio")
    if not isinstance(spec, dict):
        raise bad(f"{where}.input_audio: expected an object with 'data' and 'format'", "invalid_audio", where)
    fmt, data = spec.get("format"), spec.get("data")
    if fmt not in AUDIO_FORMATS:
        raise bad(f"{where}.input_audio.format: {fmt!r} is not one of {list(AUDIO_FORMATS)}",
                  "unsupported_audio_format", f"{where}.input_audio.format")
    if not isinstance(data, str) or not data:
        raise bad(f"{where}.input_audio.data: expected a non-empty base64 string", "invalid_base64",
                  f"{where}.input_audio.data")
    if data.startswith("data:") and "," in data:  # a data URL, as browsers write them
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad(f"{where}.input_audio.data: not valid base64 ({e})", "invalid_base64",
                  f"{where}.input_audio.data") from None
    return _load_bytes(raw, fmt, where, seconds_left)


def _load_bytes(raw: bytes, fmt: str, where: str, seconds_left: float) -> np.ndarray:
    import soundfile as sf

    param = f"{where}.input_audio.data"
    with tempfile.TemporaryDirectory(prefix="speech-adapter-serve-") as tmp:
        path = Path(tmp) / f"clip.{fmt}"
        path.write_bytes(raw)
        try:  # the header's length, before decoding a long file into memory
            declared = sf.info(str(path)).duration
        except Exception:  # not readable by libsndfile (e.g. mp3 on an old one): load_audio decides
            declared = 0.0
        if declared > seconds_left:
            raise _too_long(where, declared, seconds_left, param)
        try:
            samples = load_audio(path)
        except AudioError as e:
            raise bad(f"{where}: {e.reason}", "invalid_audio", param) from None
    seconds = len(samples) / SAMPLE_RATE
    if seconds > seconds_left:
        raise _too_long(where, seconds, seconds_left, param)
    return samples


def _too_long(where: str, seconds: float, seconds_left: float, param: str) -> APIError:
    return bad(f"{where}: audio too long ({seconds:.1f} s; {seconds_left:.1f} s of this request's "
               "audio limit left)", "audio_too_long", param)


# ---- request -------------------------------------------------------------------------------------

def _number(body: dict, key: str, default, lo: float, hi: float, integer: bool = False):
    value = body.get(key)
    if value is None:
        return default
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise bad(f"{key}: must be {kind} in [{lo}, {hi}], got {value!r}", "invalid_value", key)
    return value


def _text(content, where: str) -> str:
    """The text of a system/assistant message (a string or text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise bad(f"{where}.content: expected a string or text parts", "invalid_content", f"{where}.content")


def _user_turn(content, where: str, seconds_left: float) -> UserTurn:
    if isinstance(content, str):
        return UserTurn(content)
    if not isinstance(content, list):
        raise bad(f"{where}.content: expected a string or a list of parts", "invalid_content", f"{where}.content")
    texts, clips = [], []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "input_audio":
            clip = decode_audio(part, here, seconds_left)
            seconds_left -= len(clip) / SAMPLE_RATE
            clips.append(clip)
        else:
            raise bad(f"{here}.type: {kind!r} is not supported (use 'text' or 'input_audio')",
                      "unsupported_content", f"{here}.type")
    return UserTurn("\n".join(t for t in texts if t), clips)


def parse_chat_request(body, config: ServeConfig, served_name: str) -> ChatRequest:
    """Validate a decoded JSON body; raises APIError naming the offending field."""
    from speech_adapter.inference.api import USE_DEFAULT  # lazy: torch

    if not isinstance(body, dict):
        raise bad("request body: expected a JSON object", "invalid_json")
    model = body.get("model")
    if model != served_name:
        raise APIError(404, f"model {model!r} is not served here; this server has {served_name!r}",
                       "model_not_found", "model")
    if body.get("n", 1) != 1:
        raise bad("n: only 1 choice per request is supported", "invalid_value", "n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages: expected a non-empty list", "invalid_value", "messages")
    limit = config.max_tokens_limit
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", config.default_max_tokens, 1, limit, integer=True)
    gen = {"max_new_tokens": max_tokens,
           "temperature": float(_number(body, "temperature", 0.0, 0.0, 2.0)),
           "top_p": float(_number(body, "top_p", 1.0, 0.0, 1.0)),
           "seed": _number(body, "seed", None, -(2**63), 2**63 - 1, integer=True),
           # vLLM's extra parameter: a penalty on tokens the reply already holds (1 = none)
           "repetition_penalty": float(_number(body, "repetition_penalty", REPETITION_PENALTY, 0.0, 10.0))}
    if gen["top_p"] == 0:
        raise bad("top_p: must be > 0", "invalid_value", "top_p")
    if gen["repetition_penalty"] == 0:
        raise bad("repetition_penalty: must be > 0", "invalid_value", "repetition_penalty")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad(f"stream: expected true or false, got {stream!r}", "invalid_value", "stream")

    system, turns, seconds_left = [], [], config.max_audio_seconds
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ROLES:
            raise bad(f"{where}.role: {role!r} is not one of {list(ROLES)}", "invalid_value", f"{where}.role")
        if role in ("system", "developer"):
            system.append(_text(msg.get("content"), where))
        elif role == "assistant":
            if not turns or not isinstance(turns[-1], UserTurn):
                raise bad(f"{where}: an assistant message must follow a user message", "invalid_value", where)
            turns.append(_text(msg.get("content"), where))
        else:
            if turns and isinstance(turns[-1], UserTurn):
                raise bad(f"{where}: two user messages in a row; put both in one message", "invalid_value", where)
            turn = _user_turn(msg.get("content"), where, seconds_left)
            seconds_left -= sum(len(c) for c in turn.clips) / SAMPLE_RATE
            turns.append(turn)
    if not turns or not isinstance(turns[-1], UserTurn):
        raise bad("messages: the last message must be the user's", "invalid_value", "messages")
    return ChatRequest(model=model, system="\n".join(system) if system else USE_DEFAULT, turns=turns,
                       gen=gen, stream=stream, audio_seconds=config.max_audio_seconds - seconds_left)


# ---- responses -----------------------------------------------------------------------------------

def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion(cid: str, model: str, reply: str, finish: str, usage: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                         "finish_reason": finish, "logprobs": None}],
            "usage": usage}


def chunk(cid: str, model: str, delta: dict, finish: str | None = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
