"""Our training loop vs a peer-style loop: same model, same clips, time per epoch.

Peer style (what DeSTA2 / SALMONN-style recipes and a default Hugging Face `Trainer` do): a
plain loop equivalent to `transformers.Trainer` defaults — AdamW, max_grad_norm 1.0, batches
in random order (`group_by_length=False`), fp32 — with every clip padded to 30 s and run
through the plain HF `WhisperEncoder` on every step (no cache), the Q-Former attending to all
1500 frames, and full-vocabulary logits over every position (`SpeechLM.all_logits`, then CE on the
response tokens). It is written out here rather than run through `transformers.Trainer` so
that the only differences are the ones named above (no Trainer logging/dataloader overhead is
charged to the peer).

Ours: the real `Trainer` (speech_adapter.train.cli.run_training) with the offline defaults:
variable-length encoding, length bucketing, encoder cache (epoch 1 fills it, epoch 2 reads it).
Both time the optimizer steps with log-mel extraction and collation included; ours also
includes reading the wavs from disk (the Trainer's step time is end to end), the peer reads
them from memory, which favours the peer slightly.

    python -m benchmarks.peer_loop [--quick] [--threads 2] [--clips 32]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Result, base_parser, load_model, print_table, setup_threads, write_dataset


def peer_epoch(model, examples: list[dict], batch: int, seed: int = 0) -> dict:
    """One epoch of the peer-style loop; returns {"seconds", "steps", "loss"}."""
    import random

    import torch

    enc = model.encoder
    hf_encoder = enc.whisper_encoder
    fe = enc.feature_extractor
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)  # random batches, no length grouping (Trainer default)
    model.train()
    total, losses, steps = 0.0, [], 0
    for k in range(0, len(order) - batch + 1, batch):
        exs = [examples[i] for i in order[k:k + batch]]
        t0 = time.perf_counter()
        b = model.processor.collate(exs)
        feats = fe([e["audio"] for e in exs], sampling_rate=16000, return_tensors="pt").input_features  # (B, 80, 3000)
        with torch.no_grad():
            hs = hf_encoder(feats, output_hidden_states=True).hidden_states  # n_layers+1 × (B, 1500, D)
        states = torch.stack([hs[i] for i in enc.layers], dim=1)  # (B, L, 1500, D)
        lengths = torch.full((len(exs),), states.shape[2], dtype=torch.long)  # attend to all 1500 frames
        out = model.all_logits(b, encoder_states=(states, lengths))  # full-vocab logits (B, S, V)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        total += time.perf_counter() - t0
        losses.append(float(out.loss.detach()))
        steps += 1
    return {"seconds": total, "steps": steps, "loss": sum(losses) / len(losses)}


def run(args) -> Result:
    import numpy as np

    from benchmarks.feature_cache import train_two_epochs
    from speech_adapter.audio import load_audio
    from speech_adapter.utils.io import read_jsonl

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    model = load_model(args.quick)
    n = 4 if args.quick else args.clips
    batch = 2 if args.quick else 8
    state = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="bench_peer_") as tmp:
        tmp = Path(tmp)
        train_file = write_dataset(tmp / "data", n, durations=[0.5, 1.0] if args.quick else None)
        rows = read_jsonl(train_file)
        examples = [{"audio": load_audio(tmp / "data" / r["audio"]).astype(np.float32), "instruction": r["instruction"],
                     "response": r["response"], "system": None, "transcript": None, "description": None}
                    for r in rows]
        peer_epoch(model, examples[:batch], batch)  # warm-up (kernels, allocator)
        import torch

        with torch.no_grad():
            for k, p in model.named_parameters():
                if k in state:
                    p.copy_(state[k])
        peer = peer_epoch(model, examples, batch)
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k in state:
                    p.copy_(state[k])
        ours = train_two_epochs(model, train_file, tmp / "ours", True, batch)
    r1, r2 = peer["seconds"] / ours["epoch1_s"], peer["seconds"] / ours["epoch2_s"]
    table = print_table(
        f"Epoch of {n} clips, batch {batch}: peer-style loop vs ours (same model, same clips)",
        ["loop", "epoch s", "peer / ours"],
        [["peer: 30 s padding, no cache, full-vocab logits, random batches", peer["seconds"], 1.0],
         ["ours, epoch 1 (variable length, bucketing, fills cache)", ours["epoch1_s"], r1],
         ["ours, epoch 2+ (reads encoder cache)", ours["epoch2_s"], r2]])
    return Result("peer_loop", args.quick, threads, table,
                  headline={"speedup_epoch1": r1, "speedup_epoch2": r2},
                  data={"peer": peer, "ours": ours, "clips": n, "batch": batch,
                        "peer_style": "plain loop equal to transformers.Trainer defaults (see docstring)"},
                  seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=32, help="clips per epoch")
    args = p.parse_args(argv)
    run(args).write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
