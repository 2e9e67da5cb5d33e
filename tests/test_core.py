"""Core utilities: config validation, atomic writes, JSONL errors, audio policy."""

import dataclasses
import json
from typing import Literal

import numpy as np
import pytest
import soundfile as sf

from speech_adapter.audio import load_audio
from speech_adapter.config import apply_overrides, from_dict, help_field
from speech_adapter.errors import AudioError, ConfigError, DataError
from speech_adapter.utils.io import JsonlAppender, atomic_path, read_jsonl


@dataclasses.dataclass
class Inner:
    rank: int = help_field(8, "LoRA rank")


@dataclasses.dataclass
class Outer:
    lr: float = help_field(1e-4, "learning rate")
    kind: Literal["a", "b"] = help_field("a", "which")
    inner: Inner = help_field(default_factory=Inner, help="nested")
    layers: list[int] | None = help_field(None, "taps")


def test_config_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match=r"unknown key 'inner.rnak'.*did you mean 'rank'"):
        from_dict(Outer, {"inner": {"rnak": 4}})


@pytest.mark.parametrize("data, msg", [
    ({"lr": "fast"}, "lr: expected a number"),
    ({"kind": "c"}, "kind: 'c' is not one of"),
    ({"layers": [1, "x"]}, r"layers\[1\]"),
    ({"inner": {"rank": 2.5}}, "inner.rank: expected an integer"),
])
def test_config_wrong_type_names_key(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(Outer, data)


def test_config_overrides_and_yaml_floats():
    data = apply_overrides({"lr": "1e-3"}, ["inner.rank=16", "layers=[1,2]"])
    cfg = from_dict(Outer, data)
    assert cfg.lr == 1e-3 and cfg.inner.rank == 16 and cfg.layers == [1, 2]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_jsonl_errors_name_line_and_torn_tail_is_repaired(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"a": 3}\n{"a": 4')
    with pytest.raises(DataError, match=r"rows.jsonl:2"):
        read_jsonl(p)
    errors = []
    assert [r["a"] for r in read_jsonl(p, strict=False, errors=errors)] == [1, 3]
    assert [e["line"] for e in errors] == [2, 4]
    with JsonlAppender(p) as w:
        w.write({"a": 5})
    assert p.read_text().endswith('{"a": 3}\n{"a": 5}\n')


def _wav(path, data, sr=16000, subtype="PCM_16"):
    sf.write(path, data, sr, subtype=subtype)
    return path


def test_audio_repairs_stereo_and_resamples(tmp_path):
    t = np.linspace(0, 1, 44100, endpoint=False)
    stereo = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 220 * t)], axis=1) * 0.5
    repairs = []
    y = load_audio(_wav(tmp_path / "s.wav", stereo, 44100), repairs=repairs)
    assert y.ndim == 1 and abs(len(y) - 16000) <= 1
    assert any("downmixed" in r for r in repairs) and any("resampled" in r for r in repairs)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text("hello, I am text"), "not a readable audio file"),
    (lambda p: _wav(p, np.zeros(1)), "too short"),
    (lambda p: _wav(p, np.array([0.1, np.nan] * 8000), subtype="FLOAT"), "NaN"),
])
def test_audio_refusals_name_file_and_reason(tmp_path, make, reason):
    p = tmp_path / "bad clip.wav"
    make(p)
    with pytest.raises(AudioError, match=reason) as e:
        load_audio(p)
    assert "bad clip.wav" in str(e.value)


def test_silence_refused_only_when_asked(tmp_path):
    p = _wav(tmp_path / "quiet.wav", np.zeros(16000))
    assert load_audio(p).shape == (16000,)
    with pytest.raises(AudioError, match="silent"):
        load_audio(p, allow_silence=False)
