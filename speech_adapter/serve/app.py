"""The HTTP app: OpenAI-compatible `/v1/chat/completions` and `/v1/models`, `/health`, the page.

Starlette (the ASGI toolkit under FastAPI) served by uvicorn; routes parse requests themselves
so every refusal is an OpenAI-shaped JSON error naming the field. Streaming replies are
server-sent events (`data: {chunk}` lines, then `data: [DONE]`), as OpenAI sends them.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from importlib import resources

from speech_adapter.serve.config import ServeConfig
from speech_adapter.serve.engine import Engine, Finished
from speech_adapter.serve.protocol import APIError, chunk, completion, completion_id, parse_chat_request

PAGE = "serve_page.html"  # in speech_adapter/resources/


def page_html() -> str:
    return resources.files("speech_adapter").joinpath("resources", PAGE).read_text(encoding="utf-8")


def create_app(model, config: ServeConfig, served_name: str):
    """The ASGI app serving `model` (a loaded SpeechLM) as `served_name`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.routing import Route

    engine = Engine(model, config.max_pending)
    created = int(time.time())
    model_card = {"id": served_name, "object": "model", "created": created, "owned_by": "speech-adapter"}

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "invalid_api_key")

    async def read_body(request: Request) -> bytes:
        limit = config.max_request_bytes
        too_big = APIError(413, f"request body larger than {config.max_request_mb:g} MiB (max_request_mb)",
                           "request_too_large")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_big
        body = bytearray()
        async for part in request.stream():  # counted as it arrives: chunked bodies declare no length
            body += part
            if len(body) > limit:
                raise too_big
        return bytes(body)

    async def chat_completions(request: Request):
        authorize(request)
        try:
            raw = await read_body(request)
        except ClientDisconnect:
            raise APIError(400, "client disconnected", "client_disconnected") from None
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise APIError(400, f"request body: not valid JSON ({e})", "invalid_json") from None
        # decoding audio is CPU work: off the event loop, beside (not in) the model's worker
        chat = await run_in_threadpool(parse_chat_request, body, config, served_name)
        cid = completion_id()
        events = engine.stream(chat)
        first = await anext(events)  # a request the model refuses fails here, as JSON, before any event
        if not chat.stream:
            deltas = [first]
            async for item in events:
                deltas.append(item)
            done = deltas[-1]
            return JSONResponse(completion(cid, served_name, done.reply, done.finish_reason, _usage(done)))

        async def sse():
            yield _event(chunk(cid, served_name, {"role": "assistant", "content": ""}))
            item = first
            try:
                while not isinstance(item, Finished):
                    if item:
                        yield _event(chunk(cid, served_name, {"content": item}))
                    item = await anext(events)
            except APIError as e:  # after the headers went out, an error can only be an event
                yield _event(e.body())
                yield "data: [DONE]\n\n"
                return
            finally:
                await events.aclose()
            yield _event(chunk(cid, served_name, {}, item.finish_reason))
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def list_models(request: Request):
        authorize(request)
        return JSONResponse({"object": "list", "data": [model_card]})

    async def get_model(request: Request):
        authorize(request)
        if request.path_params["name"] != served_name:
            raise APIError(404, f"model {request.path_params['name']!r} is not served here; this server has "
                                f"{served_name!r}", "model_not_found")
        return JSONResponse(model_card)

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": served_name, "pending": engine.pending,
                             "max_pending": config.max_pending, "served": engine.served,
                             "auth": config.api_key is not None,
                             "max_audio_seconds": config.max_audio_seconds})

    async def index(request: Request):
        return HTMLResponse(page_html())

    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    async def http_error(request: Request, exc: HTTPException):  # unknown path, wrong method
        err = APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", "not_found"
                       if exc.status_code == 404 else "invalid_request")
        return JSONResponse(err.body(), status_code=exc.status_code)

    routes = [Route("/", index), Route("/health", health), Route("/v1/models", list_models),
              Route("/v1/models/{name:path}", get_model),
              Route("/v1/chat/completions", chat_completions, methods=["POST"])]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        engine.close()

    app = Starlette(routes=routes, exception_handlers={APIError: api_error, HTTPException: http_error},
                    lifespan=lifespan)
    app.state.engine = engine
    return app


def _usage(done: Finished) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
