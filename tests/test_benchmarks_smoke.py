"""Smoke test: every benchmark runs end to end with --quick on tiny random models and writes its
result JSON; run_all's README writer turns those results into a summary. No timing asserts."""

from __future__ import annotations

import importlib
import json

import pytest

NAMES = ["encoder_length", "train_mfu", "feature_cache", "teacher_generation", "peer_loop", "memory"]
HEADLINES = {
    "encoder_length": ["mix_speedup", "linear_r2"],
    "train_mfu": ["peak_gflop_s", "best_mfu", "trainer_mfu"],
    "feature_cache": ["epoch2_speedup", "gb_per_audio_hour"],
    "teacher_generation": ["batched_speedup", "same_answers"],
    "peer_loop": ["speedup_epoch1", "speedup_epoch2"],
    "memory": ["demo_peak_mb", "smol_cpu_peak_mb"],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    for name in NAMES:
        mod = importlib.import_module(f"benchmarks.{name}")
        assert mod.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_writes_result(results, name):
    data = json.loads((results / f"{name}.quick.json").read_text())
    assert data["name"] == name and data["quick"] is True and data["threads"] == 1
    assert data["table"].count("|") > 8  # a rendered table
    for key in HEADLINES[name]:
        v = data["headline"][key]
        assert isinstance(v, (int, float)) and v == v and v >= 0, (key, v)
    assert data["machine"]["torch"]


def test_teacher_batching_keeps_greedy_answers(results):
    data = json.loads((results / "teacher_generation.quick.json").read_text())
    assert data["headline"]["same_answers"] == 1.0


def test_encoder_plot_written(results):
    data = json.loads((results / "encoder_length.quick.json").read_text())
    assert (results / "encoder_length.quick.png").stat().st_size > 1000
    assert [c["seconds"] for c in data["data"]["curve"]][-1] == 30.0


def test_readme_summary(results, tmp_path):
    from benchmarks.common import machine
    from benchmarks.run_all import write_readme

    res = {n: json.loads((results / f"{n}.quick.json").read_text()) for n in NAMES}
    path = tmp_path / "README.md"
    write_readme(path, res, machine() | {"threads": 1}, "cmd", {"x": 1.0}, 60.0, quick=True)
    text = path.read_text()
    assert "| measure | result | target | met |" in text
    for title in ("Encoder cost", "MFU", "feature cache", "Teacher generation", "peer-style", "Memory"):
        assert title.lower() in text.lower(), title
