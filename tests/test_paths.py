"""speech_adapter.paths.resolve_model: offline names and local dirs as they were; hub ids through
`huggingface_hub.snapshot_download` (downloading unless offline), each failure one clear line.

The online branch is tested at the huggingface_hub boundary (snapshot_download monkeypatched);
every test runs inside the socket guard, so none of them can reach the network.
"""

from __future__ import annotations

import httpx2
import huggingface_hub
import huggingface_hub.constants
import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from speech_adapter.errors import ModelNotFoundError
from speech_adapter.paths import hub_offline, offline_model_dir, resolve_model
from speech_adapter.utils.safety import block_network

REPO = "some-org/some-model"


@pytest.fixture(autouse=True)
def guarded(monkeypatch, tmp_path):
    """No network, an empty hub cache, and no offline switch unless a test sets one."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with block_network():
        yield


class FakeHub:
    """Stands in for snapshot_download: records calls, returns a snapshot dir or raises."""

    def __init__(self, result):
        self.result, self.calls = result, []

    def __call__(self, repo_id, **kwargs):
        self.calls.append((repo_id, kwargs))
        if isinstance(self.result, Exception):
            raise self.result
        return str(self.result)


def _http_error(cls, message):
    request = httpx2.Request("GET", f"https://huggingface.co/api/models/{REPO}")
    return cls(message, response=httpx2.Response(401, request=request))


def _use(monkeypatch, result) -> FakeHub:
    fake = FakeHub(result)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return fake


def test_hub_id_downloads_into_the_cache_when_online(monkeypatch, tmp_path):
    fake = _use(monkeypatch, tmp_path / "snap")
    assert resolve_model(REPO) == str(tmp_path / "snap")
    # online; no token argument, so huggingface_hub uses HF_TOKEN / the saved login for gated models
    assert fake.calls == [(REPO, {"local_files_only": False})]


@pytest.mark.parametrize("env, value, offline", [
    ("HF_HUB_OFFLINE", "1", True), ("HF_HUB_OFFLINE", "true", True), ("TRANSFORMERS_OFFLINE", "1", True),
    ("HF_HUB_OFFLINE", "0", False), ("HF_HUB_OFFLINE", "", False),
])
def test_offline_switch_reads_the_cache_only(monkeypatch, tmp_path, env, value, offline):
    monkeypatch.setenv(env, value)
    assert hub_offline() is offline
    fake = _use(monkeypatch, tmp_path / "snap")
    resolve_model(REPO)
    assert fake.calls[-1][1] == {"local_files_only": offline}
    resolve_model(REPO, offline=not offline)  # the explicit argument wins over the environment
    assert fake.calls[-1][1] == {"local_files_only": not offline}


@pytest.mark.parametrize("error, offline, message", [
    (LocalEntryNotFoundError("cannot find the requested files in the disk cache"), True,
     "hub model 'some-org/some-model' is not in the Hugging Face cache .* hub access is off "
     ".*`hf download some-org/some-model`"),
    (LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub"), False,
     "could not be downloaded: the hub \\(https://.*\\) is unreachable and the model is not in the "
     "Hugging Face cache"),
    (None, False, "is gated: accept its licence .* set HF_TOKEN"),
    ("missing", False, "was not found on the hub .* private repository: set HF_TOKEN"),
])
def test_each_failure_is_one_clear_line(monkeypatch, error, offline, message):
    if error is None:
        error = _http_error(GatedRepoError, "Access to model some-org/some-model is restricted.")
    elif error == "missing":
        error = _http_error(RepositoryNotFoundError, "Repository Not Found for url")
    _use(monkeypatch, error)
    with pytest.raises(ModelNotFoundError, match=message) as e:
        resolve_model(REPO, offline=offline)
    assert "\n" not in str(e.value)


def test_real_library_offline_and_unreachable_fail_clearly(monkeypatch):
    """Without the fake: offline with an empty cache, and online with the network blocked (the
    guard's refusal is what an unreachable hub looks like to huggingface_hub)."""
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache .* hub access is off"):
        resolve_model(REPO, offline=True)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    with pytest.raises(ModelNotFoundError, match="unreachable|could not be downloaded"):
        resolve_model(REPO, offline=False)


def test_offline_names_and_local_dirs_never_touch_the_hub(monkeypatch, tmp_path):
    fake = _use(monkeypatch, tmp_path / "snap")
    monkeypatch.setenv("SPEECH_ADAPTER_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelNotFoundError, match="not prepared .* speech-adapter models prepare"):
        resolve_model("offline:whisper-tiny.en")
    prepared = offline_model_dir("offline:whisper-tiny.en")
    prepared.mkdir(parents=True)
    (prepared / "config.json").write_text("{}")
    assert resolve_model("offline:whisper-tiny.en") == prepared
    assert resolve_model(str(tmp_path)) == tmp_path
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model(str(prepared / "config.json"))
    for missing in ("./no/such/dir", str(tmp_path / "absent"), "a/b/c"):
        with pytest.raises(ModelNotFoundError, match="model directory not found"):
            resolve_model(missing)
    assert fake.calls == []
