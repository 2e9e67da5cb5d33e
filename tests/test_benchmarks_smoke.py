"""Smoke test: every benchmark runs end to end with --quick on tiny random models and writes its
result JSON; run_all's README writer turns those results into a summary. No timing asserts."""

from __future__ import annotations

import importlib
import json

import pytest

NAMES = ["encoder_length", "train_mfu", "feature_cache", "teacher_generation", "eval_generation", "peer_loop", "memory"]
HEADLINES = {
    "encoder_length": ["mix_speedup", "linear_r2"],
    "train_mfu": ["peak_gflop_s", "best_mfu", "trainer_mfu"],
    "feature_cache": ["epoch2_speedup", "gb_per_audio_hour"],
    "teacher_generation": ["ct2_speedup", "ct2_same_answers"],
    "eval_generation": ["speech_speedup", "speech_same_answers", "text_ceiling_speedup", "text_ceiling_same_answers"],
    "peer_loop": ["speedup_epoch1", "speedup_epoch2"],
    "memory": ["demo_peak_mb", "standard_peak_mb"],
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


def test_ctranslate2_teacher_keeps_greedy_answers(results):
    data = json.loads((results / "teacher_generation.quick.json").read_text())
    assert data["headline"]["ct2_same_answers"] == 1.0


def test_eval_generation_speedups_keep_the_replies(results):
    h = json.loads((results / "eval_generation.quick.json").read_text())["headline"]
    assert h["speech_same_answers"] == 1.0 and h["text_ceiling_same_answers"] == 1.0


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


@pytest.mark.parametrize("adapter,rate,pairs", [("qformer", 0.0, [[0, 1], [2, 3]]),
                                                ("stack_mlp", 12.5, [[0, 2], [1, 3]])])
def test_bucketing_key_counts_llm_tokens(adapter, rate, pairs):
    """The MFU fix in train/data.py: the bucketing key weights audio seconds by the adapter's
    tokens per second (0 for the fixed-size Q-Former; 50 Hz / stack 4 for the tiny stack_mlp)."""
    from speech_adapter.models.tiny import tiny_speechlm
    from speech_adapter.train.config import TrainConfig
    from speech_adapter.train.data import TrainData

    rows = [{"id": str(i), "audio": "x.wav", "duration": d, "instruction": "Hi?", "response": r,
             "system": None, "transcript": None, "description": None}
            for i, (d, r) in enumerate([(9.0, "a"), (1.0, "b"), (8.0, "c" * 200), (2.0, "d" * 200)])]
    data = TrainData(rows, TrainConfig(batch_size=2, bucket_size=2), check_audio=False)
    data.set_audio_token_rate(tiny_speechlm(adapter))
    assert data.audio_tokens_per_s == rate
    batches = sorted(sorted(b) for b in data.epoch_batches(0))
    # Q-Former (64 tokens whatever the duration): the short texts pair up, the long ones too;
    # stack_mlp: 1 s + short text (14 tokens) with 2 s + long text (76), 9 s (114) with 8 s (151)
    assert batches == pairs
