"""Training-step throughput and model FLOPs utilization (MFU) on this CPU.

MFU (PaLM, Chowdhery et al. 2022, appendix B) = useful model FLOPs per second / peak FLOP/s.
The peak is measured in the same run: the best fp32 2048x2048 matmul rate at the same thread
count. Useful FLOPs of one step (forward + backward + AdamW on the adapter):

- frozen LLM: 4 * N_body per real (non-pad) token — forward 2N plus input-gradient backward 2N,
  no weight gradients (the LLM is frozen) — plus attention scores/values 3 * 4 * L * H * ctx per token
  (backward 2x forward, all of it input gradients), plus the LM head 4 * V * H only at target
  positions (the only logits the loss reads);
- adapter: 3x its forward FLOPs (weights trained: 6 * N per use), counted by FlopCounterMode;
- encoder: its forward FLOPs at the clips' real lengths, or 0 when states come from the cache.

"executed" FLOP/s counts every matmul the step really ran (FlopCounterMode over the step:
padding, full-vocab logits and 30 s padding included), i.e. hardware utilization.

Variants, same model, same rows, same run: logits="all" vs "targets", length bucketing off/on,
encoder cache off/on, and the Trainer's own `compute_loss` path. A torch.profiler table of
the best variant shows where the rest of the time goes.

    python -m benchmarks.train_mfu [--quick] [--threads 2] [--batch 8] [--steps 3]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (Result, base_parser, examples, load_model, matmul_peak, print_table,
                               setup_threads)

IGNORE = -100


def llm_shape(model) -> dict:
    """N_body (non-embedding params), layers, hidden, vocab of the frozen causal LM."""
    lm = model.causal_lm
    body = getattr(lm, lm.base_model_prefix)
    emb = lm.get_input_embeddings().weight
    n_body = sum(p.numel() for n, p in body.named_parameters() if "embed_tokens" not in n)
    return {"n_body": n_body, "layers": lm.config.num_hidden_layers, "hidden": emb.shape[1],
            "vocab": emb.shape[0]}


def count_flops(fn) -> int:
    """Matmul/conv FLOPs `fn()` executes (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def useful_flops(model, batch, enc_fwd: float, adapter_fwd: float, cached: bool) -> dict:
    """The step's useful FLOPs by part (see the module docstring)."""
    s = llm_shape(model)
    lens = batch["attention_mask"].sum(-1).tolist()
    real = sum(lens)
    targets = int((batch["labels"][:, 1:] != IGNORE).sum())
    attn = sum(3 * 4 * s["layers"] * s["hidden"] * (n * (n + 1) / 2) for n in lens)
    llm = 4 * s["n_body"] * real + attn + 4 * s["vocab"] * s["hidden"] * targets
    parts = {"llm": llm, "adapter": 3 * adapter_fwd, "encoder": 0 if cached else enc_fwd}
    return {**parts, "total": sum(parts.values()), "real_tokens": real, "targets": targets,
            "padded_tokens": int(batch["attention_mask"].numel())}


def make_batches(model, rows, batch: int, bucketing: bool):
    """Collated micro-batches in the order the real `TrainData` (train/data.py) yields them,
    with length bucketing on or off; its sort key decides how much padding is left."""
    from speech_adapter.train.config import TrainConfig
    from speech_adapter.train.data import TrainData

    cfg = TrainConfig(batch_size=batch, length_bucketing=bucketing)
    meta = [{"id": str(i), "audio": f"clip{i}.wav", "duration": len(r["audio"]) / 16000,
             "instruction": r["instruction"], "response": r["response"], "system": None,
             "transcript": None, "description": None} for i, r in enumerate(rows)]
    data = TrainData(meta, cfg, check_audio=False)
    if hasattr(data, "set_audio_token_rate"):
        data.set_audio_token_rate(model)
    groups = [[rows[i] for i in idx] for idx in data.epoch_batches(0)]
    return [(g, model.processor.collate(g)) for g in groups]


def step_fn(model, opt, logits: str | None, cache: dict | None, examples_of: dict):
    """One optimizer step on batch `key`, the way the Trainer does it (minus accelerate).

    `logits` "all"/"targets" calls SpeechLM.forward directly; None goes through the Trainer's
    own loss path (`objectives.compute_loss`, self_distill). `cache` maps key -> encoder states.
    """
    import torch

    from speech_adapter.train.config import TrainConfig
    from speech_adapter.train.objectives import compute_loss

    cfg = TrainConfig()

    def step(key, batch):
        states = cache[key] if cache is not None else None
        if logits is None:
            loss, _ = compute_loss(model, examples_of[key], cfg,
                                   encode=(lambda b: states) if states is not None else None)
        else:
            out = model(batch, encoder_states=states) if logits == "targets" else model.all_logits(batch, encoder_states=states)
            loss = out.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


EPOCH_BATCHES = 16  # batches per bucketed epoch (bucketing needs more than a few rows to sort)
VARIANTS = [  # name, logits, bucketing, encoder cache, attention implementation
    ("logits=all, no bucketing, no cache", "all", False, False, "sdpa"),
    ("logits=targets, no bucketing, no cache", "targets", False, False, "sdpa"),
    ("logits=targets, bucketing, no cache", "targets", True, False, "sdpa"),
    ("logits=targets, bucketing, cache", "targets", True, True, "sdpa"),
    ("logits=targets, bucketing, cache, eager attention", "targets", True, True, "eager"),
    ("Trainer compute_loss, bucketing, cache", None, True, True, None),
]


def run(args) -> Result:
    import numpy as np
    import torch

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    peak = matmul_peak(512 if args.quick else 2048, repeat=3 if args.quick else 7)
    print(f"peak fp32 matmul: {peak:.1f} GFLOP/s")
    model = load_model(args.quick)
    # the FLOP model counts 4·N per real token of every row; the shared-prefix shortcut (run once per
    # batch) would break that count and torch's FlopCounterMode, so it is measured off here
    model.share_prefix = False
    model.train()
    lm_config = model.causal_lm.config
    default_attn = lm_config._attn_implementation
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    # an epoch of EPOCH_BATCHES batches is bucketed (as a real epoch is), `steps` of them are timed
    n_rows = args.batch * max(args.steps, 2 if args.quick else EPOCH_BATCHES)
    rng = np.random.default_rng(0)
    rows = examples(n_rows, durations=[0.5, 1.0] if args.quick else None,
                    response_words=6 if args.quick else None, seed=1)
    rows = [rows[i] for i in rng.permutation(n_rows)]

    results, layouts = [], {}
    for name, logits, bucketing, cached, attn in VARIANTS:
        if bucketing not in layouts:  # collate + per-batch FLOPs once per batch layout
            batches = make_batches(model, rows, args.batch, bucketing)[: args.steps]
            info = []
            with torch.no_grad():
                for _, b in batches:
                    enc_f = count_flops(lambda: model.encode_audio(b))
                    states = model.encode_audio(b)
                    ad_f = count_flops(lambda: model.adapter(*states))
                    info.append((enc_f, ad_f, states))
            layouts[bucketing] = (batches, info)
        batches, info = layouts[bucketing]
        cache = {k: states for k, (_, _, states) in enumerate(info)} if cached else None  # epoch 2+
        lm_config._attn_implementation = attn or default_attn
        step = step_fn(model, opt, logits, cache, {k: g for k, (g, _) in enumerate(batches)})
        step(0, batches[0][1])  # warm-up: oneDNN kernel caches, allocator
        times, flops = [], []
        for k, (g, b) in enumerate(batches):
            flops.append(useful_flops(model, b, info[k][0], info[k][1], cached))
            t0 = time.perf_counter()
            step(k, b)
            times.append(time.perf_counter() - t0)
        executed = count_flops(lambda: step(0, batches[0][1])) if name == VARIANTS[0][0] or logits is None else None
        lm_config._attn_implementation = default_attn
        dt = sum(times)
        useful = sum(f["total"] for f in flops)
        real = sum(f["real_tokens"] for f in flops)
        padded = sum(f["padded_tokens"] for f in flops)
        r = {"variant": name, "step_s": dt / len(times), "tokens_per_s": real / dt,
             "useful_gflops_per_step": useful / len(times) / 1e9, "useful_gflop_s": useful / dt / 1e9,
             "mfu": useful / dt / 1e9 / peak,
             "executed_gflop_s": executed / times[0] / 1e9 if executed else None,
             "padding_frac": 1 - real / padded, "llm_frac": sum(f["llm"] for f in flops) / useful,
             "times": times}
        results.append(r)
        print(f"{name}: {r['step_s']:.2f} s/step, {r['tokens_per_s']:.0f} tok/s, MFU {r['mfu']:.1%}",
              flush=True)

    # profile the best direct variant: where does the time go?
    best_i = max(range(len(VARIANTS) - 1), key=lambda i: results[i]["mfu"])
    name, logits, bucketing, cached, attn = VARIANTS[best_i]
    batches, info = layouts[bucketing]
    lm_config._attn_implementation = attn or default_attn
    step = step_fn(model, opt, logits, {0: info[0][2]} if cached else None, {})
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(0, batches[0][1])
    lm_config._attn_implementation = default_attn
    prof_table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    print(f"\ntorch.profiler, one step of '{name}' (top ops by self CPU time):\n{prof_table}")

    rows_t = [[r["variant"], r["step_s"], r["tokens_per_s"], r["useful_gflop_s"], f"{r['mfu']:.1%}",
               "" if r["executed_gflop_s"] is None else r["executed_gflop_s"], f"{r['padding_frac']:.1%}"]
              for r in results]
    table = print_table(
        f"Training step, batch {args.batch}, {args.steps} timed steps/variant, peak {peak:.0f} GFLOP/s "
        f"({threads} threads)",
        ["variant", "s/step", "tokens/s", "useful GFLOP/s", "MFU", "executed GFLOP/s", "padding"], rows_t)
    base, best_r = results[0], max(results, key=lambda r: r["mfu"])
    print(f"best MFU {best_r['mfu']:.1%} ({best_r['variant']}); target >= 70%: "
          f"{'met' if best_r['mfu'] >= 0.7 else 'NOT met'}; speedup vs first variant "
          f"{base['step_s'] / best_r['step_s']:.2f}x")
    return Result(
        "train_mfu", args.quick, threads, table,
        headline={"peak_gflop_s": peak, "best_mfu": best_r["mfu"], "best_variant": best_r["variant"],
                  "target": 0.7, "met": best_r["mfu"] >= 0.7, "llm": model.config.llm,
                  "trainer_mfu": results[-1]["mfu"], "trainer_tokens_per_s": results[-1]["tokens_per_s"],
                  "speedup_vs_all_logits": base["step_s"] / best_r["step_s"]},
        data={"variants": results, "llm": llm_shape(model), "batch": args.batch, "steps": args.steps,
              "profile": prof_table},
        seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="rows per micro-batch")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.steps = min(args.batch, 4), min(args.steps, 2)
    run(args).write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
