"""Replies of one model to an eval suite's rows in speech mode under several repetition
penalties, side by side: how many are degenerate (loops, cut off) and what each says.

    python scripts/decoding_probe.py runs/demo/export runs/demo/eval/suite.jsonl 1.0 1.1

Greedy, 128 new tokens, batch 16, the training system prompt (as `eval run`).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an adapter or export dir")
    ap.add_argument("suite", help="an eval suite JSONL (rows with audio)")
    ap.add_argument("penalties", nargs="+", type=float, help="repetition penalties to compare (1 = none)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--limit", type=int, default=None, help="only the first N rows")
    args = ap.parse_args(argv)

    import torch

    from speech_adapter.eval.scorecard import degenerate
    from speech_adapter.eval.systems import speechlm_generate_fn
    from speech_adapter.models.speechlm import SpeechLM

    torch.manual_seed(0)
    model = SpeechLM.from_pretrained(args.model)
    model.eval()
    rows = [json.loads(line) for line in open(args.suite, encoding="utf-8") if line.strip()][: args.limit]
    for penalty in args.penalties:
        gen = speechlm_generate_fn(model, max_new_tokens=args.max_new_tokens, batch_size=16,
                                   repetition_penalty=penalty)
        out = gen(rows, "speech")
        bad = sum(any(v for v in degenerate(o["output"], o["stop"]).values() if v) for o in out)
        print(f"=== repetition penalty {penalty}: degenerate {bad}/{len(out)}", flush=True)
        for r, o in zip(rows, out):
            reply = o["output"].replace("\n", " / ")
            print(f"{r['task']} | {r['instruction'][:60]} | {o['stop']} | {reply[:300]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
