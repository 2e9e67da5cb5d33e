"""`speech-adapter serve`: a fresh process serves an export on 127.0.0.1 and stops cleanly on
SIGINT (exit 130, as any interrupted command); settings are validated with errors naming the key."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
import pytest

from speech_adapter.errors import ConfigError
from tests.serve.conftest import SERVED, make_config


def test_a_fresh_process_serves_the_export(no_network, export_dir):
    cmd = [sys.executable, "-m", "speech_adapter.cli", "serve", "--model", str(export_dir), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(export_dir.parent)})
    try:
        line = proc.stdout.readline()
        found = re.search(r"serving (\S+) at (http://127\.0\.0\.1:\d+)/", line)
        assert found, line + proc.stderr.read() if proc.poll() is not None else line
        assert found.group(1) == SERVED
        health = httpx.get(found.group(2) + "/health", timeout=30).json()
        assert health["status"] == "ok" and health["model"] == SERVED
        assert httpx.get(found.group(2) + "/v1/models").json()["data"][0]["id"] == SERVED
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    assert rc == 130 and "Traceback" not in proc.stderr.read()  # Ctrl-C's exit code, a clean stop


def test_binds_loopback_by_default(export_dir):
    config = make_config(export_dir)
    assert config.host == "127.0.0.1" and config.loopback and config.api_key is None
    assert make_config(export_dir, host="::1").loopback and not make_config(export_dir, host="0.0.0.0").loopback


@pytest.mark.parametrize("change,key", [
    ({"port": 70000}, "port"),
    ({"max_audio_seconds": 0}, "max_audio_seconds"),
    ({"default_max_tokens": 5000}, "default_max_tokens"),
    ({"max_pending": 0}, "max_pending"),
    ({"api_key": "  "}, "api_key"),
    ({"model": ""}, "model"),
])
def test_bad_settings_name_their_key(export_dir, change, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        make_config(export_dir, **change)


def test_cli_warns_when_exposed_without_a_key(export_dir, capsys, monkeypatch):
    from speech_adapter.cli import main
    from speech_adapter.serve import cli as serve_cli

    monkeypatch.delenv(serve_cli.API_KEY_ENV, raising=False)
    monkeypatch.setattr(serve_cli, "_run", lambda server, announce: None)  # do not actually listen
    assert main(["serve", "--model", str(export_dir), "--host", "0.0.0.0"]) == 0
    assert "without an API key" in capsys.readouterr().err
    monkeypatch.setenv(serve_cli.API_KEY_ENV, "k")
    assert main(["serve", "--model", str(export_dir), "--host", "0.0.0.0"]) == 0
    assert "without an API key" not in capsys.readouterr().err
