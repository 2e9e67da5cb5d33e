"""`speech-adapter serve --model EXPORT`: the OpenAI-compatible endpoint and the demo page.

    speech-adapter serve --model runs/demo/export                 # http://127.0.0.1:8000/
    speech-adapter serve --model runs/demo/export --port 9000 --api-key "$KEY"

Binds 127.0.0.1 unless --host says otherwise; serving beyond loopback without an API key
prints a warning. Flags are built from `ServeConfig`, where each setting is declared once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path

from speech_adapter.serve.app import create_app
from speech_adapter.serve.config import ServeConfig
from speech_adapter.serve.server import bound_port, require_extra, uvicorn_server

API_KEY_ENV = "SPEECH_ADAPTER_API_KEY"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def configure(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(ServeConfig)
    for f in dataclasses.fields(ServeConfig):
        help_text = f.metadata.get("help", "")
        tp = hints[f.name]
        if tp is bool:
            parser.add_argument(_flag(f.name), action="store_true", help=help_text)
            continue
        kind = next((t for t in (int, float) if tp is t), str)
        default = None if f.name == "model" else f.default
        extra = {"required": True} if f.name == "model" else {}
        suffix = "" if default is None else f" (default: {default})"
        parser.add_argument(_flag(f.name), type=kind, default=default, help=help_text + suffix,
                            metavar=f.name.upper(), **extra)


def config_from_args(args) -> ServeConfig:
    """The validated ServeConfig of parsed CLI args (the API key may come from the environment)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)}
    if values["api_key"] is None and os.environ.get(API_KEY_ENV):
        values["api_key"] = os.environ[API_KEY_ENV]
    config = ServeConfig(**values)
    config.validate()
    return config


def served_name(config: ServeConfig) -> str:
    return config.served_name or Path(config.model).resolve().name


def main(args) -> int:
    from speech_adapter.inference.api import load  # lazy: torch

    config = config_from_args(args)
    require_extra()  # before the model loads, not after
    if not config.loopback and config.api_key is None:
        print(f"warning: serving on {config.host} without an API key: anyone who can reach this "
              f"address can use the model (set --api-key or ${API_KEY_ENV})", file=sys.stderr)
    model = load(config.model, ignore_mismatch=config.ignore_mismatch,
                 trust_remote_code=config.trust_remote_code)
    name = served_name(config)
    server = uvicorn_server(create_app(model, config, name), config.host, config.port)

    async def announce():  # after binding, so a --port 0 run prints the real port
        port = bound_port(server)
        print(f"serving {name} at http://{config.host}:{port}/ (OpenAI API at /v1)", flush=True)

    _run(server, announce)
    return 0


def _run(server, announce) -> None:
    import asyncio

    async def serve():
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            await announce()
        await task

    asyncio.run(serve())
    # Stopped by Ctrl-C / SIGTERM: uvicorn re-raises the signal on its way out, but asyncio.run's
    # own SIGINT handler swallows it when the main task has already finished (a race that a
    # loaded machine loses), so say it here: the CLI's exit code is then 130 every time.
    if server.should_exit:
        raise KeyboardInterrupt
