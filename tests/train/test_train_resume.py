"""Exact resume: 10 steps straight == 5 steps, SIGKILL, resume 5 (the `speech-adapter train` CLI)."""

import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.train.train_fixtures import write_rows

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# `speech-adapter ARGS...` whose Trainer SIGKILLs itself right after checkpoint KILL_AFTER is on disk
KILLING_CLI = """
import os, signal, sys
from speech_adapter.train import loop
save, kill_after = loop.Trainer.save, int(sys.argv[1])
def save_then_die(self):
    save(self)
    if self.acc.is_main_process and self.global_step == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
loop.Trainer.save = save_then_die
from speech_adapter.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _recipe(tmp_path, train_file, out):
    p = tmp_path / f"{out}.yaml"
    p.write_text(yaml.safe_dump({
        "name": "resume", "output_dir": str(tmp_path / out), "seed": 3,
        "model": {"encoder": "tiny:whisper", "llm": "tiny:llm",
                  "adapter": {"kind": "qformer", "num_queries": 4, "qformer_layers": 1,
                              "qformer_heads": 4, "dropout": 0.1}},  # dropout: RNG state matters
        "train": {"batch_size": 2, "grad_accum": 1, "max_steps": 10,
                  "save_every": 1, "keep_last": 2, "lr": 1e-3, "warmup_steps": 2, "log_every": 1},
    }))
    return p, train_file


def _train(recipe, kill_after=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    recipe, train_file = recipe
    argv = ["train", str(recipe), "--train-file", str(train_file)]
    cmd = ([sys.executable, "-m", "speech_adapter.cli"] if kill_after is None
           else [sys.executable, "-c", KILLING_CLI, str(kill_after)])
    return subprocess.run(cmd + argv, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # three subprocesses, ~30-80 s on the shared CPUs
def test_sigkill_and_resume_match_straight_run(tmp_path):
    data = write_rows(tmp_path / "data", 6)  # 3 steps per epoch: the kill lands mid-epoch
    straight = _train(_recipe(tmp_path, data, "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]

    recipe = _recipe(tmp_path, data, "resumed")
    killed = _train(recipe, kill_after=5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "resumed" / "train"
    assert not (run / "adapter").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")) == \
        ["step-00004", "step-00005"]
    moved = load_file(str(run / "checkpoints" / "step-00005" / "training_state" / "trainable.safetensors"))
    resumed = _train(recipe)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr

    a = load_file(str(tmp_path / "straight" / "train" / "checkpoints" / "step-00010" / "training_state"
                      / "trainable.safetensors"))
    b = load_file(str(run / "checkpoints" / "step-00010" / "training_state" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    assert any(not torch.allclose(moved[k], b[k]) for k in b)  # the resumed half did train
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    fa = load_file(str(tmp_path / "straight" / "train" / "adapter" / "adapter_model.safetensors"))
    fb = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert all(torch.allclose(fa[k], fb[k], atol=1e-6, rtol=0) for k in fa)
    steps = [l for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 10  # 5 before the kill + 5 after
