"""Safety helpers: refuse pickled weights, keep file references inside their dir, block the network.

Follows the safetensors / peft convention (weights only as `*.safetensors`; `torch.load` only with
`weights_only=True`) and Hugging Face's offline mode (`HF_HUB_OFFLINE`), plus a socket guard that
proves a run never reaches out: `block_network()` makes every outgoing connection raise.
Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from speech_adapter.errors import ConfigError, SpeechAdapterError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class NetworkBlockedError(SpeechAdapterError, ConnectionError):
    """A connection attempted while the network guard is on."""


def pickled_files(directory) -> list[str]:
    """Names of pickle-format weight files directly in `directory` (sorted)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def refuse_pickles(directory, what: str = "weights") -> None:
    """Raise ConfigError when `directory` holds pickled weights and no safetensors file.

    A pickle can run arbitrary code when loaded, so speech_adapter only loads safetensors.
    """
    d = Path(directory)
    unsafe = pickled_files(d)
    if unsafe and not any(d.glob("*.safetensors")):
        raise ConfigError(f"{d}: refusing pickled {what} {unsafe}; only safetensors are loaded "
                          "(convert with safetensors.torch.save_file in a trusted environment)")


def inside(root, rel: str, key: str) -> Path:
    """`root / rel`, refused (ConfigError naming `key`) when it resolves outside `root`."""
    root = Path(root).resolve()
    p = (root / str(rel)).resolve()
    if not p.is_relative_to(root):
        raise ConfigError(f"{key}: {rel!r} resolves outside {root}; refusing")
    return p


LOCAL_HOSTS = (None, "", "localhost", "127.0.0.1", "::1")
_INSTALLED: list = []
ATTEMPTS: list[str] = []  # what the guard refused in this process (libraries may swallow the error)


@contextlib.contextmanager
def block_network(log=None):
    """Within the block, an internet (AF_INET/AF_INET6) connection to a non-local host, or a DNS
    lookup of one, raises NetworkBlockedError. Local IPC (unix sockets, loopback) still works.
    Each refusal is also recorded in `ATTEMPTS` and appended to the file `log` when given, since
    a library may catch the error and carry on."""
    saved = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)

    def refuse(what: str):
        ATTEMPTS.append(what)
        if log is not None:
            with open(log, "a", encoding="utf-8") as f:
                f.write(what + "\n")
        raise NetworkBlockedError(f"network access attempted while blocked: {what}")

    def _remote(address) -> bool:
        host = address[0] if isinstance(address, tuple) else None
        return host not in LOCAL_HOSTS

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and _remote(address):
            refuse(f"connect to {address}")
        return saved[0](self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and _remote(address):
            refuse(f"connect to {address}")
        return saved[1](self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            refuse(f"DNS lookup of {host!r}")
        return saved[2](host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = saved


def install_network_guard(log=None) -> None:
    """Block the network for the rest of this process (for a sitecustomize in tests)."""
    guard = block_network(log)
    guard.__enter__()
    _INSTALLED.append(guard)  # kept alive: a collected generator would run its `finally` and unblock


def load_safetensors(path, device: str = "cpu") -> dict:
    """`safetensors.torch.load_file`, with a truncated or corrupt file reported as a ConfigError
    naming the file (safetensors' own error does not name it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except SafetensorError as e:
        raise ConfigError(f"{path}: not a readable safetensors file ({e}); re-create or re-download it") from None
