"""Serve an export over HTTP: an OpenAI-compatible chat-completions endpoint and a demo page.

`config` (settings), `protocol` (OpenAI request -> conversation, JSON errors, response shapes),
`engine` (one model, one worker thread), `app` (the Starlette routes), `cli` (`speech-adapter
serve`). Nothing is imported eagerly; the server needs the `serve` extra (starlette, uvicorn).
"""
