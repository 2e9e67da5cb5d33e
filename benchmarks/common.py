"""Shared plumbing for the benchmarks: threads, machine facts, timing, synthetic data, results.

Every benchmark script sets its thread count once (`setup_threads`), prints it, times the
variants it compares in the same process on the same inputs, prints a table and writes
`benchmarks/results/<name>.json` atomically. Nothing here runs at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_RATE = 16000
# A realistic mix of 2-10 s clips (speech-instruction corpora cluster around 3-6 s).
CLIP_MIX_S = [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
RESPONSE = ("The speaker is a woman with a clear, high-pitched voice who talks quickly and "
            "calmly. She says that the weather will be sunny tomorrow afternoon, and she sounds "
            "friendly and confident, with an American English accent and normal volume.")


def base_parser(description: str) -> argparse.ArgumentParser:
    """--quick (seconds-long smoke mode), --threads, --out (results dir)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes (tiny random models): a smoke run")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                   help="torch intra-op threads (also OMP_NUM_THREADS for subprocesses)")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON result")
    return p


def setup_threads(n: int) -> int:
    """Pin torch to `n` intra-op threads (1 inter-op thread) and say so."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    print(f"threads: torch.get_num_threads()={torch.get_num_threads()} OMP_NUM_THREADS={n}")
    return n


def machine() -> dict:
    """CPU model, cores, load average, torch/transformers versions."""
    import torch
    import transformers

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        txt = Path("/proc/cpuinfo").read_text()
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                         if f" {f}" in txt)
    except OSError:
        pass
    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(), "load_avg": list(os.getloadavg()),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "torch_threads": torch.get_num_threads()}


def timeit(fn, repeat: int = 3, warmup: int = 1) -> dict:
    """Run `fn` warmup + repeat times; {"median_s", "min_s", "runs"}."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "runs": runs}


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    """Peak fp32 matmul rate in GFLOP/s (best of `repeat` n×n @ n×n products)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    t = timeit(lambda: torch.mm(a, b), repeat=repeat, warmup=2)
    return 2 * n ** 3 / t["min_s"] / 1e9


def synth_clip(seconds: float, seed: int = 0):
    """A speech-like 16 kHz float32 clip: a pitch-varying tone with syllable-rate bursts + noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 150 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)) ** 2
    wav = env * 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / SAMPLE_RATE) + 0.01 * rng.standard_normal(t.size)
    return wav.astype(np.float32)


def examples(n: int, durations: list[float] | None = None, response_words: int | None = None, seed: int = 0):
    """`n` SpeechLM example dicts: clips cycling through `durations`, a fixed instruction and a
    response of `response_words` words (default: the whole RESPONSE), varied per row."""
    import random

    durations = durations or CLIP_MIX_S
    rng = random.Random(seed)
    words = RESPONSE.split()
    out = []
    for i in range(n):
        k = response_words or rng.randint(len(words) // 2, len(words))
        out.append({"audio": synth_clip(durations[i % len(durations)], seed + i),
                    "instruction": "What can you hear? Describe the speaker and what they say.",
                    "response": " ".join(words[:k]), "system": None, "transcript": None,
                    "description": None})
    return out


def write_dataset(root: Path, n: int, durations: list[float] | None = None, seed: int = 0) -> Path:
    """Write `n` clips as wav + a distilled-style train.jsonl under `root`; returns the JSONL."""
    import soundfile as sf

    from speech_adapter.utils.io import write_jsonl_atomic

    root.mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    rows = []
    for i, ex in enumerate(examples(n, durations, seed=seed)):
        sf.write(root / "wav" / f"c{i}.wav", ex["audio"], SAMPLE_RATE)
        rows.append({"id": f"c{i}", "audio": f"wav/c{i}.wav", "duration": len(ex["audio"]) / SAMPLE_RATE,
                     "instruction": ex["instruction"], "response": ex["response"],
                     "description": "A woman speaks quickly.", "transcript": "hello"})
    path = root / "train.jsonl"
    write_jsonl_atomic(path, rows)
    return path


def load_model(quick: bool, **adapter):
    """The offline default SpeechLM (real Whisper tiny.en + Qwen2.5-Coder-0.5B-Instruct), or the
    tiny random pair with --quick. `adapter` overrides AdapterConfig fields."""
    import torch

    from speech_adapter.models.speechlm import SpeechLM

    torch.manual_seed(0)
    if quick:
        from speech_adapter.models.tiny import tiny_speechlm

        return tiny_speechlm(**({"adapter": "qformer"} | adapter))
    from speech_adapter.models.config import AdapterConfig, ModelConfig

    cfg = ModelConfig(adapter=AdapterConfig(**adapter)) if adapter else ModelConfig()
    return SpeechLM.build(cfg)


def print_table(title: str, headers: list[str], rows: list[list]) -> str:
    """Print (and return) a Markdown table."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = [f"\n### {title}", "", "| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


@dataclass
class Result:
    """What a benchmark writes: its table, headline ratios, and where it ran."""

    name: str
    quick: bool
    threads: int
    table: str = ""
    headline: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    seconds: float = 0.0

    def write(self, out_dir: Path) -> Path:
        from speech_adapter.utils.io import write_json_atomic

        self.machine = self.machine or machine()
        path = Path(out_dir) / f"{self.name}{'.quick' if self.quick else ''}.json"
        write_json_atomic(path, asdict(self))
        print(f"wrote {path}")
        return path


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
