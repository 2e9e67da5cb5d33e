"""Settings of `speech-adapter serve`, declared once; the CLI flags are built from these fields."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from speech_adapter.config import help_field
from speech_adapter.errors import ConfigError

LOOPBACK_NAMES = ("localhost",)


@dataclass
class ServeConfig:
    """How the server binds, whom it admits, and how much one request may ask for."""

    model: str = help_field("", "export dir (speech-adapter export), adapter or run dir")
    host: str = help_field("127.0.0.1", "address to bind; anything but loopback exposes the model to the network")
    port: int = help_field(8000, "TCP port (0: any free port, printed at start)")
    served_name: str | None = help_field(None, "model id clients send and /v1/models lists (default: the export dir's name)")
    api_key: str | None = help_field(None, "require 'Authorization: Bearer KEY' on /v1/* (default: $SPEECH_ADAPTER_API_KEY, else none)")
    max_request_mb: float = help_field(25.0, "largest request body in MiB (base64 audio is 4/3 of the file)")
    max_audio_seconds: float = help_field(120.0, "most audio per request, all clips together; longer is refused")
    max_tokens_limit: int = help_field(1024, "largest max_tokens a request may ask for")
    default_max_tokens: int = help_field(256, "reply length when a request gives no max_tokens")
    max_pending: int = help_field(32, "requests running or queued at once; more are answered 503 (bounded memory)")
    ignore_mismatch: bool = help_field(False, "load even if the base models differ from the recorded ones")
    trust_remote_code: bool = help_field(False, "allow model code from the LLM dir")

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model: required (an export dir)")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: must be in 0..65535, got {self.port}")
        if self.max_request_mb <= 0:
            raise ConfigError(f"max_request_mb: must be > 0, got {self.max_request_mb}")
        if self.max_audio_seconds <= 0:
            raise ConfigError(f"max_audio_seconds: must be > 0, got {self.max_audio_seconds}")
        if self.max_tokens_limit < 1:
            raise ConfigError(f"max_tokens_limit: must be >= 1, got {self.max_tokens_limit}")
        if not 1 <= self.default_max_tokens <= self.max_tokens_limit:
            raise ConfigError(f"default_max_tokens: must be in 1..max_tokens_limit ({self.max_tokens_limit}), "
                              f"got {self.default_max_tokens}")
        if self.max_pending < 1:
            raise ConfigError(f"max_pending: must be >= 1, got {self.max_pending}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key: empty; omit it to serve without a key")

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def loopback(self) -> bool:
        """Whether `host` binds only this machine (127.0.0.0/8, ::1, localhost)."""
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: assume it reaches the network
            return False
