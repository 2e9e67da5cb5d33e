"""Distributed CPU training: `accelerate launch` with 2 processes (gloo); both ranks end equal."""

import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from speech_adapter.models.tiny import tiny_speechlm
from tests.train.train_fixtures import write_rows

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    """A TCP port nothing listens on now (a fixed one may be held by another job on the machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    """ddp_train.py under `accelerate launch` with 2 processes on the tiny model and 8 rows."""
    data = write_rows(tmp_path / "data", 8)
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    assert accelerate, "accelerate CLI not installed beside this python"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [accelerate, "launch", "--config_file", os.path.join(ROOT, "recipes/accelerate/ddp_cpu.yaml"),
           "--main_process_port", str(free_port()), os.path.join(ROOT, "tests/train/ddp_train.py"),
           str(data), str(tmp_path / "run"), *extra]
    try:  # each rank dumps its stacks and exits after ddp_train.HANG_S (180 s) if it hangs
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"accelerate launch still running after 300 s; files: "
                    f"{sorted(p.name for p in (tmp_path / 'run').glob('*'))}\n{err[-6000:]}")


@pytest.mark.slow  # two processes start torch + transformers: ~30 s on the shared CPUs
def test_two_process_ddp_ranks_agree(tmp_path):
    res = launch(tmp_path)
    assert res.returncode == 0, res.stderr[-6000:]
    r0 = load_file(str(tmp_path / "run" / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "run" / "rank1.safetensors"))
    init = tiny_speechlm(seed=0).trainable_state_dict()
    assert r0.keys() == r1.keys() == init.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert any(not torch.allclose(r0[k], init[k]) for k in r0)  # it trained
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1 and '"step": 3' in metrics[0]  # only the main process logs


@pytest.mark.slow
def test_a_rank_that_fails_ends_the_launch_with_its_error(tmp_path):
    res = launch(tmp_path, "1")  # rank 1 raises in step 2 while rank 0 waits in the all-reduce
    assert res.returncode != 0
    assert "rank 1 fails at step 2 (test)" in res.stderr
    assert "Timeout (0:" not in res.stderr, res.stderr[-6000:]  # no rank hung until faulthandler's dump
    assert not list((tmp_path / "run").glob("rank*.safetensors"))
