"""GPU check: what a real training run costs on one machine — tokens/s, MFU, peak memory.

Writes a speech-like dataset, trains the adapter for a few hundred steps through `accelerate
launch` with each shipped config that applies (DDP on every local GPU, then FSDP; on the CPU the
gloo DDP config), and, where vLLM imports, times teacher generation with the same LLM. Each
launcher runs in its own processes, so one failing (FSDP wrapping, vLLM's install) leaves the
others' numbers standing; its log's last lines are reported.

MFU (PaLM, appendix B) = useful FLOP/s / (peak FLOP/s x processes), with the useful FLOPs of
`benchmarks/train_mfu.py`: the frozen LLM 4·N_body per real token (forward plus input-gradient
backward: the LLM is frozen), attention 12·L·H·n(n+1)/2 per row of n tokens, the LM head 4·V·H per target
token, and the encoder's forward 2·N per frame (50 frames per audio second, up to the deepest
tapped layer). The adapter is left out (under 1 % at these sizes), so MFU is slightly
understated. The row length n is the step's mean. The shared-prompt-prefix shortcut is off
here, as in train_mfu, because the FLOP model counts every row's prefix.

    python -m benchmarks.gpu_check                         # CUDA, bf16, Qwen2.5-Coder-1.5B + Whisper base
    python -m benchmarks.gpu_check --device cpu --tiny     # the CPU smoke run the tests use
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"ddp": "recipes/accelerate/ddp_gpu.yaml", "fsdp": "recipes/accelerate/fsdp.yaml",
           "ddp_cpu": "recipes/accelerate/ddp_cpu.yaml"}
# dense bf16 tensor-core peaks from the vendors' spec sheets, TFLOP/s (sparsity not counted)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
FRAMES_PER_S = 50  # Whisper encoder frames per audio second (10 ms mels, conv stride 2)


def parser():
    from benchmarks.common import RESULTS, base_parser

    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(out=RESULTS / "gpu_check")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cuda: bf16 on every local GPU")
    p.add_argument("--tiny", action="store_true", help="tiny random models (tiny:whisper / tiny:llm): a smoke run")
    p.add_argument("--llm", default="offline:qwen2.5-coder-1.5b-instruct", help="backbone: offline:NAME, dir or hub id")
    p.add_argument("--encoder", default="offline:whisper-base", help="Whisper: offline:NAME, dir or hub id")
    p.add_argument("--launchers", default=None, help="comma-separated of ddp,fsdp,ddp_cpu (default: ddp,fsdp on "
                                                     "cuda, ddp_cpu on cpu)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per launcher")
    p.add_argument("--batch", type=int, default=8, help="rows per micro-batch per process")
    p.add_argument("--clips", type=int, default=512, help="distinct clips in the dataset (2-10 s each)")
    p.add_argument("--processes", type=int, default=0, help="processes per launcher (0: every GPU; 1 on cpu)")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="bf16 peak per device (0: from the GPU's name, e.g. H200 989; on cpu a measured fp32 matmul)")
    p.add_argument("--vllm-prompts", type=int, default=512, help="teacher prompts for vLLM (0 = skip)")
    p.add_argument("--timeout", type=int, default=240, help="seconds allowed per launcher and for vLLM")
    p.add_argument("--worker", nargs=3, metavar=("RECIPE", "RUN_DIR", "TRAIN_FILE"), help=argparse_hidden())
    p.add_argument("--vllm-worker", metavar="JSON", help=argparse_hidden())
    return p


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


# ---------------------------------------------------------------- the parent


def write_recipe(path: Path, args, launcher: str) -> Path:
    import yaml

    gpu = args.device == "cuda"
    model = {"encoder": "tiny:whisper", "llm": "tiny:llm"} if args.tiny else {"encoder": args.encoder, "llm": args.llm}
    recipe = {
        "name": f"gpu_check_{launcher}",
        "model": {**model, "adapter": {"kind": "stack_mlp"}, "dtype": "bfloat16" if gpu else "float32"},
        "train": {"max_steps": args.steps, "batch_size": args.batch,
                  "precision": "bf16" if gpu else "fp32", "lr": 1e-4, "log_every": 1, "save_every": 0,
                  "cache_encoder": False, "num_workers": 4 if gpu else 0,
                  "feature_norm_clips": 64 if gpu else 4},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# speech-adapter train (written by benchmarks/gpu_check.py)\n" + yaml.safe_dump(recipe))
    return path


def launch(launcher: str, recipe: Path, train_file: Path, run_dir: Path, args, port: int) -> dict:
    """`accelerate launch --config_file CONFIG ... -m benchmarks.gpu_check --worker`; its status."""
    import shutil

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    nproc = args.processes or (_gpu_count() if args.device == "cuda" else 1)
    cmd = [accelerate, "launch", "--config_file", str(ROOT / CONFIGS[launcher]), "--num_processes", str(nproc),
           "--main_process_port", str(port)]
    if launcher == "fsdp":
        cmd += ["--fsdp_transformer_layer_cls_to_wrap", fsdp_wrap_class(args.llm)]
    cmd += ["-m", "benchmarks.gpu_check", "--worker", str(recipe), str(run_dir), str(train_file)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "launch.log"
    t0 = time.perf_counter()
    try:
        with open(log, "w") as f:
            rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=args.timeout,
                                cwd=ROOT).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    status = {"launcher": launcher, "processes": nproc, "wall_s": round(time.perf_counter() - t0, 1),
              "status": "ok" if rc == 0 else f"failed ({rc})", "log": str(log)}
    if rc != 0:
        status["log_tail"] = log.read_text(errors="replace").strip().splitlines()[-5:]
    return status


def fsdp_wrap_class(llm: str) -> str:
    """The LLM's decoder-layer class for FSDP's transformer wrap policy: SpeechLM has no
    `_no_split_modules` of its own for accelerate to read (Qwen2ForCausalLM -> Qwen2DecoderLayer)."""
    from transformers import AutoConfig

    from speech_adapter.paths import resolve_model

    arch = AutoConfig.from_pretrained(resolve_model(llm)).architectures[0]
    return arch.replace("ForCausalLM", "DecoderLayer")


def summarize(run_dir: Path, peak_flops: float, world: int, mean_audio_s: float) -> dict:
    """tokens/s, s/step and MFU over the logged steps after warm-up; peak memory of every rank."""
    info = json.loads((run_dir / "shape.json").read_text())
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = metrics[max(2, len(metrics) // 10):] or metrics  # the first steps compile kernels, fill caches
    s = info["llm"]
    flops, seconds = 0.0, 0.0
    for m in timed:
        rows, seq = info["rows_per_step"], m["seq_tokens"]
        n = seq / rows
        llm = 4 * s["n_body"] * seq + rows * 6 * s["layers"] * s["hidden"] * n * (n + 1) \
            + 4 * s["vocab"] * s["hidden"] * m["tokens"]
        encoder = 2 * info["encoder_params"] * FRAMES_PER_S * mean_audio_s * rows
        flops += world * (llm + encoder)  # every rank did a step like rank 0's
        seconds += m["step_s"]
    mem = [json.loads(p.read_text())["peak_mem_mb"] for p in sorted(run_dir.glob("rank*.json"))]
    return {"steps_timed": len(timed), "step_s": statistics.median(m["step_s"] for m in timed),
            "tokens_per_s": statistics.median(m["tokens_per_s"] for m in timed),
            "useful_tflop_s": flops / seconds / 1e12, "mfu": flops / seconds / (peak_flops * world),
            "peak_mem_mb": max(mem) if mem else None, "llm_n_body": s["n_body"],
            "encoder_params": info["encoder_params"], "loss_last": metrics[-1]["loss"]}


def peak_flops(args) -> tuple[float, str]:
    """Per-device peak FLOP/s and where the number comes from."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12, "--peak-tflops"
    if args.device == "cpu":
        from benchmarks.common import matmul_peak

        return matmul_peak(512 if args.tiny else 2048) * 1e9, "measured fp32 matmul"
    import torch

    name = torch.cuda.get_device_name(0)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12, f"{name}: dense bf16 spec"
    raise SystemExit(f"unknown GPU {name!r}: give its dense bf16 peak with --peak-tflops")


def _gpu_count() -> int:
    import torch

    return max(torch.cuda.device_count(), 1)


def vllm_generation(args, out: Path) -> dict:
    """Teacher generation through vLLM in its own process (it takes the whole GPU); skipped
    when vLLM does not import, a failure reported rather than raised."""
    if args.tiny or args.device != "cuda" or args.vllm_prompts <= 0:
        return {"status": "skipped (needs --device cuda and a real LLM)"}
    spec = out / "vllm.json"
    spec.write_text(json.dumps({"llm": args.llm, "prompts": args.vllm_prompts, "out": str(out / "vllm_result.json")}))
    log = out / "vllm.log"
    try:
        with open(log, "w") as f:
            rc = subprocess.run([os.environ.get("VLLM_PYTHON", sys.executable), "-m", "benchmarks.gpu_check",
                                 "--vllm-worker", str(spec)], stdout=f, stderr=subprocess.STDOUT,
                                timeout=args.timeout, cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=str(ROOT))).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    if rc == 0:
        return {"status": "ok", **json.loads((out / "vllm_result.json").read_text())}
    return {"status": f"failed ({rc})", "log_tail": log.read_text(errors="replace").strip().splitlines()[-5:]}


def run(args):
    from benchmarks.common import Result, print_table, setup_threads, write_dataset

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    out = Path(args.out)
    launchers = (args.launchers or ("ddp_cpu" if args.device == "cpu" else "ddp,fsdp")).split(",")
    peak, peak_src = peak_flops(args)
    print(f"peak per device: {peak / 1e12:.3g} TFLOP/s ({peak_src})", flush=True)
    durations = [0.5, 1.0] if args.tiny else None
    train_file = write_dataset(out / "data", args.clips, durations=durations)
    rows = [json.loads(x) for x in train_file.read_text().splitlines()]
    mean_audio_s = sum(r["duration"] for r in rows) / len(rows)

    runs = []
    for i, launcher in enumerate(launchers):
        run_dir = out / launcher
        recipe = write_recipe(run_dir / "recipe.yaml", args, launcher)
        status = launch(launcher, recipe, train_file, run_dir / "train", args, port=29540 + i)
        if status["status"] == "ok":
            status.update(summarize(run_dir / "train", peak, status["processes"], mean_audio_s))
        runs.append(status)
        print(json.dumps(status, default=str), flush=True)
    teacher = vllm_generation(args, out)
    print(f"vllm: {json.dumps(teacher)}", flush=True)

    table = print_table(
        f"GPU check: {'tiny models' if args.tiny else f'{args.llm} + {args.encoder}'}, {args.device}, "
        f"batch {args.batch}/process, {args.steps} steps, peak {peak / 1e12:.3g} TFLOP/s/device",
        ["launcher", "processes", "status", "s/step", "tokens/s", "useful TFLOP/s", "MFU", "peak mem MB"],
        [[r["launcher"], r["processes"], r["status"], r.get("step_s", ""), r.get("tokens_per_s", ""),
          r.get("useful_tflop_s", ""), f"{r['mfu']:.1%}" if "mfu" in r else "", r.get("peak_mem_mb", "")]
         for r in runs])
    if teacher.get("status") == "ok":
        print(f"vLLM teacher: {teacher['prompts']} prompts, {teacher['output_tokens_per_s']:.0f} output tokens/s, "
              f"{teacher['prompts_per_s']:.1f} prompts/s")
    ok = [r for r in runs if "mfu" in r]
    best = max(ok, key=lambda r: r["mfu"]) if ok else {}
    return Result("gpu_check", args.tiny, threads, table,
                  headline={"tokens_per_s": best.get("tokens_per_s", 0.0), "mfu": best.get("mfu", 0.0),
                            "peak_mem_mb": best.get("peak_mem_mb") or 0.0, "launchers_ok": len(ok),
                            "launchers": len(runs)},
                  data={"runs": runs, "teacher_vllm": teacher, "peak_flops": peak, "peak_source": peak_src,
                        "device": args.device, "llm": args.llm, "encoder": args.encoder,
                        "mean_audio_s": mean_audio_s},
                  seconds=time.perf_counter() - t_start)


# ---------------------------------------------------------------- the launched processes


def worker(recipe: str, run_dir: str, train_file: str) -> int:
    """One accelerate process: the train CLI's own path, then this rank's peak memory."""
    import resource

    import torch
    from accelerate.utils import set_seed

    from benchmarks.train_mfu import llm_shape
    from speech_adapter.models.speechlm import SpeechLM
    from speech_adapter.recipe import load_recipe
    from speech_adapter.train.loop import run_training

    rec = load_recipe(recipe, train_file=train_file)
    model_cfg, train_cfg = rec.model, rec.train_config()
    run_dir = Path(run_dir)
    set_seed(train_cfg.seed)
    model = SpeechLM.build(model_cfg)
    model.share_prefix = False  # see the module docstring
    enc = model.encoder
    used = list(enc.whisper_encoder.layers[: max(enc.layers)])
    stem = [m for name, m in enc.whisper_encoder.named_children() if name.startswith("conv")]
    encoder_params = sum(p.numel() for m in used + stem for p in m.parameters())
    shape = {"llm": llm_shape(model), "encoder_params": encoder_params,
             "rows_per_step": train_cfg.batch_size * train_cfg.grad_accum}
    enc_cfg = {"encoder": model_cfg.encoder, "layers": enc.layers, "dtype": model_cfg.dtype}
    status, _ = run_training(model, train_cfg, run_dir, encoder_config=enc_cfg)
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        mem = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (run_dir / f"rank{rank}.json").write_text(json.dumps({"peak_mem_mb": round(mem, 1)}))
    if rank == 0:
        (run_dir / "shape.json").write_text(json.dumps(shape))
    return 0 if status == "done" else 1


def vllm_worker(spec_path: str) -> int:
    """Generate teacher answers for distill-like prompts with data_prep's VllmTeacher; time it."""
    from benchmarks.common import RESPONSE
    from data_prep.teacher import Sampling, VllmTeacher
    from speech_adapter.paths import resolve_model

    spec = json.loads(Path(spec_path).read_text())
    teacher = VllmTeacher(resolve_model(spec["llm"]), spec["llm"], "bfloat16")
    description = f"[00:00-00:05] {RESPONSE[:120]} (Gender: Female, Pitch: High, Speaking speed: Fast, Duration: 5s)"
    prompts = [[{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"{description}\n\nWhat can you hear? (variant {i})"}]
               for i in range(spec["prompts"])]
    texts = [teacher.format(m) for m in prompts]
    sampling = Sampling(max_new_tokens=160)
    teacher.generate_raw(texts[:8], sampling=sampling)  # warm-up: CUDA graphs, allocator
    t0 = time.perf_counter()
    answers = teacher.generate_raw(texts, sampling=sampling)
    dt = time.perf_counter() - t0
    tok = teacher.tokenizer
    out_tokens = sum(len(tok(a[0])["input_ids"]) for a in answers)
    Path(spec["out"]).write_text(json.dumps({
        "prompts": len(texts), "seconds": dt, "prompts_per_s": len(texts) / dt,
        "output_tokens_per_s": out_tokens / dt, "mean_output_tokens": out_tokens / len(texts)}))
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    args.tiny = args.tiny or args.quick  # the shared --quick flag of every benchmark means the same here
    if args.worker:
        return worker(*args.worker)
    if args.vllm_worker:
        return vllm_worker(args.vllm_worker)
    result = run(args)
    result.write(args.out)
    return 0 if result.headline["launchers_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
