"""SIGKILL at seeded random points: synth, distill (fake teacher), train (tiny), eval run (tiny), export.

Each test runs the stage once uninterrupted (the reference), once in a subprocess killed at a
random moment after its first output appears (seeded delays), checks that nothing half-written
is visible under a final name (every JSONL line parses, every JSON and safetensors file loads),
reruns it to completion, and compares rows and weights with the reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.reliability.cases import SR, tone

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
TINY = {"encoder": "tiny:whisper", "llm": "tiny:llm",
        "adapter": {"kind": "qformer", "num_queries": 4, "qformer_layers": 1, "qformer_heads": 4, "dropout": 0.1}}


def cli(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "speech_adapter.cli", *argv], env=ENV, capture_output=True,
                          text=True, timeout=300)


def kill_at_random(argv: list[str], trigger: Path, seed: int, max_delay: float) -> int:
    """Start the CLI, wait until `trigger` exists, sleep a seeded random delay, SIGKILL it."""
    p = subprocess.Popen([sys.executable, "-m", "speech_adapter.cli", *argv], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not trigger.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, max_delay))
    p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL, f"finished before the kill (rc {p.returncode}): {err[-1500:]!r}"
    return p.returncode


def assert_nothing_half_written(root: Path) -> int:
    """Every visible JSONL/JSON/safetensors file under `root` is whole; returns files checked."""
    from safetensors.torch import load_file

    n = 0
    for p in root.rglob("*"):
        if any(part.startswith(".") for part in p.relative_to(root).parts) or not p.is_file():
            continue  # temp files of atomic writes are hidden dot-names by design
        if p.suffix == ".jsonl":
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                json.loads(line), f"{p}:{i} torn"
            data = p.read_bytes()
            assert not data or data.endswith(b"\n"), f"{p}: torn last line"
        elif p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".safetensors":
            load_file(str(p))
        elif p.suffix == ".wav":
            import soundfile as sf

            sf.info(str(p))
        else:
            continue
        n += 1
    return n


def rows(path: Path, drop=()) -> list[dict]:
    out = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in out), key=lambda r: json.dumps(r))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- synth


@pytest.mark.parametrize("seed", [11])
def test_synth_killed_then_resumed_equals_straight(tmp_path, seed):
    args = ["data", "synth", "--num-clips", "40", "--seed", "3", "--quiet", "--p-multi-speaker", "0"]
    assert cli(args + ["--out-dir", str(tmp_path / "ref")]).returncode == 0
    run = tmp_path / "run"
    kill_at_random(args + ["--out-dir", str(run)], run / "corpus.jsonl", seed, 0.5)
    assert_nothing_half_written(run)
    partial = len((run / "corpus.jsonl").read_text().splitlines())
    assert cli(args + ["--out-dir", str(run)]).returncode == 0
    assert rows(run / "corpus.jsonl") == rows(tmp_path / "ref" / "corpus.jsonl")
    assert partial < 40
    for wav in (tmp_path / "ref" / "wavs").iterdir():  # same samples, byte for byte
        assert digest(run / "wavs" / wav.name) == digest(wav), wav.name
    assert sorted(p.name for p in (run / "wavs").iterdir() if not p.name.startswith(".")) == \
        sorted(p.name for p in (tmp_path / "ref" / "wavs").iterdir())


# ---------------------------------------------------------------- distill (fake teacher)


def _described(d: Path, n: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        g = "female" if i % 2 else "male"
        lines.append(json.dumps({"id": f"c{i:03d}", "audio": f"wavs/c{i:03d}.wav", "transcript": "hello there",
                                 "language": "en", "meta": {"gender": g, "speakers": 1},
                                 "description": f"[00:00-00:02] hello there (Gender: {g.title()}, Duration: {i}s)"}))
    (d / "described.jsonl").write_text("\n".join(lines) + "\n")
    (d / "fake.json").write_text(json.dumps({"delay_s": 0.05, "rules": [
        {"contains": "female, male", "answers": ["The speaker is male.", "The speaker is female."]}],
        "default": "I hear a person saying hello there."}))
    return d


def test_distill_killed_then_resumed_equals_straight(tmp_path):
    src = _described(tmp_path / "in", 30)

    def args(out):
        return ["data", "distill", "--input", str(src / "described.jsonl"), "--output", str(out / "distilled.jsonl"),
                "--model", f"fake:{src / 'fake.json'}", "--batch-size", "1", "--quiet", "--tasks", "gender",
                "--describe-per-clip", "1", "--templates-per-clip", "1", "--attempts", "2", "--seed", "4"]

    ref = cli(args(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-1500:]
    run = tmp_path / "run"
    kill_at_random(args(run), run / "distilled.jsonl", seed=7, max_delay=1.0)
    assert_nothing_half_written(run)
    assert cli(args(run)).returncode == 0
    assert rows(run / "distilled.jsonl") == rows(tmp_path / "ref" / "distilled.jsonl")
    assert rows(run / "rejects.jsonl") == rows(tmp_path / "ref" / "rejects.jsonl")


# ---------------------------------------------------------------- train (tiny model)


def _train_recipe(d: Path, name: str) -> Path:
    p = d / f"{name}.yaml"
    p.write_text(yaml.safe_dump({
        "name": name, "output_dir": str(d / name), "seed": 5, "model": TINY,
        "train": {"batch_size": 2, "max_steps": 30, "save_every": 1, "keep_last": 2,
                  "lr": 1e-3, "warmup_steps": 2, "log_every": 1}}))
    return p


@pytest.mark.slow  # three CLI subprocesses on tiny models, ~40 s
def test_train_killed_then_resumed_equals_straight(tmp_path):
    from safetensors.torch import load_file
    import torch

    from tests.train.train_fixtures import write_rows

    data = write_rows(tmp_path / "data", 6)
    assert cli(["train", str(_train_recipe(tmp_path, "ref")), "--train-file", str(data)]).returncode == 0
    recipe = _train_recipe(tmp_path, "run")
    run = tmp_path / "run" / "train"
    kill_at_random(["train", str(recipe), "--train-file", str(data)], run / "metrics.jsonl", seed=3, max_delay=0.6)
    assert_nothing_half_written(run)
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert done < 30, "the kill landed after training"
    res = cli(["train", str(recipe), "--train-file", str(data)])
    assert res.returncode == 0, res.stderr[-1500:]
    a = load_file(str(tmp_path / "ref" / "train" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == list(range(1, 31))


# ---------------------------------------------------------------- eval run (tiny model)


@pytest.mark.slow  # three CLI subprocesses on tiny models, ~40 s
def test_eval_run_killed_then_resumed_equals_straight(tmp_path):
    from speech_adapter.models.tiny import tiny_speechlm
    import soundfile as sf

    tiny_speechlm(seed=2).save_adapter(tmp_path / "model")
    suite = []
    for i in range(40):
        sf.write(str(tmp_path / f"c{i}.wav"), tone(0.4 + 0.05 * i, f0=150 + 20 * i), SR)
        suite.append({"id": f"r{i}", "task": "gender", "audio": str(tmp_path / f"c{i}.wav"), "transcript": "hi",
                      "meta": {"gender": "female"}, "instruction": "Male or female?", "template_id": "g.0",
                      "split": "seen", "constraints": [], "options": ["female", "male"], "label": "female",
                      "metric": "option", "description": "Gender: Female"})
    (tmp_path / "suite.jsonl").write_text("".join(json.dumps(r) + "\n" for r in suite))

    def args(out):
        return ["eval", "run", "--suite", str(tmp_path / "suite.jsonl"), "--model", str(tmp_path / "model"),
                "--out", str(out), "--batch-size", "1", "--max-new-tokens", "6", "--system", "tiny"]

    assert cli(args(tmp_path / "ref")).returncode == 0
    run = tmp_path / "run"
    kill_at_random(args(run), run / "generations.jsonl", seed=5, max_delay=1.5)
    assert_nothing_half_written(run)
    assert cli(args(run)).returncode == 0
    assert rows(run / "generations.jsonl") == rows(tmp_path / "ref" / "generations.jsonl")
    assert rows(run / "scores.jsonl") == rows(tmp_path / "ref" / "scores.jsonl")


# ---------------------------------------------------------------- export


@pytest.mark.slow  # three CLI subprocesses on tiny models, ~40 s
def test_export_killed_at_random_points_never_leaves_a_partial_export(tmp_path):
    from tests.inference.export_fixtures import make_run, perturbed_tiny

    run = make_run(perturbed_tiny(lora=True), tmp_path / "run")
    assert cli(["export", str(run), str(tmp_path / "ref")]).returncode == 0
    ref_files = {p.relative_to(tmp_path / "ref").as_posix(): p for p in (tmp_path / "ref").rglob("*") if p.is_file()}
    out = tmp_path / "out"
    killed = 0
    for seed in range(3):  # kills land during imports, model build, hashing or the write
        p = subprocess.Popen([sys.executable, "-m", "speech_adapter.cli", "export", str(run), str(out)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.Random(seed).uniform(1.0, 9.0))
        p.send_signal(signal.SIGKILL)
        killed += p.wait() == -signal.SIGKILL
        if out.exists():  # an export dir, if visible at all, is complete
            assert {q.relative_to(out).as_posix() for q in out.rglob("*") if q.is_file()} == set(ref_files)
            assert_nothing_half_written(out)
    assert killed >= 1
    assert cli(["export", str(run), str(out)]).returncode == 0
    for rel, p in ref_files.items():
        if p.suffix == ".safetensors":
            assert digest(out / rel) == digest(p), rel
