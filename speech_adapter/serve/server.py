"""Running the app under uvicorn: in the foreground (the CLI) or on a background thread.

The background form is for code that talks to its own server in the same process (the tests,
the load benchmark): it binds, waits until uvicorn accepts connections, yields the base URL and
shuts the server down cleanly on exit.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from speech_adapter.errors import ConfigError

EXTRA_HINT = "speech-adapter serve needs the 'serve' extra: pip install 'speech-adapter[serve]'"


def require_extra() -> None:
    """Raise ConfigError naming the extra when starlette or uvicorn is not installed."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as e:
        raise ConfigError(f"{EXTRA_HINT} ({e.name} is missing)") from None


def uvicorn_server(app, host: str, port: int, log_level: str = "info"):
    """A uvicorn.Server for `app` (not started)."""
    require_extra()
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def bound_port(server) -> int:
    """The port a started server listens on (the real one when asked for port 0)."""
    return server.servers[0].sockets[0].getsockname()[1]


@contextlib.contextmanager
def background(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve `app` on a thread; yields 'http://host:port'. Raises RuntimeError if it never starts."""
    server = uvicorn_server(app, host, port, log_level="warning")
    thread = threading.Thread(target=server.run, name="speech-adapter-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{bound_port(server)}"
    finally:
        server.should_exit = True
        thread.join(timeout)
