"""Eval generation: the speech model's replies and the text ceiling, each before and after its speedup.

Same rows, same run, greedy:
- speech mode (`SpeechLM.generate`, the path of the untrained and trained systems): the prefill
  computing logits at every prompt position (as it did before) vs at the last one only
  (`logits_to_keep=1`); over Qwen's 151k-word vocabulary the full prefill logits are ~30 % of
  the prefill FLOPs and B x S x V floats;
- text ceiling: `SpeechLM.generate` with the description in the prompt vs the same prompt
  through the `ctranslate2` teacher backend.
The replies of each pair are compared (identical is expected).

    python -m benchmarks.eval_generation [--quick] [--threads 1] [--rows 16] [--batch 8]
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Result, base_parser, examples, load_model, print_table, setup_threads
from benchmarks.teacher_generation import DESCRIPTIONS, INSTRUCTIONS


@contextlib.contextmanager
def all_position_logits(model):
    """The old prefill: the LM's forward ignores `logits_to_keep` (logits at every position)."""
    lm = model.causal_lm
    forward = lm.forward

    def full(*args, **kwargs):
        kwargs.pop("logits_to_keep", None)
        return forward(*args, **kwargs)

    lm.forward = full
    try:
        yield
    finally:
        lm.forward = forward


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(args) -> Result:
    from data_prep.teacher import Sampling, TeacherConfig
    from data_prep.teachers import load_teacher
    from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, teacher_user_message

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    n = 4 if args.quick else args.rows
    new = 8 if args.quick else args.max_new_tokens
    model = load_model(args.quick).eval()
    speech = examples(n)
    text = [{"audio": None, "instruction": teacher_user_message(DESCRIPTIONS[i % 4], INSTRUCTIONS[i % 5]),
             "response": None, "system": DEFAULT_SYSTEM_PROMPT, "transcript": None, "description": None}
            for i in range(n)]

    def gen(rows):
        return sum((model.generate(rows[i:i + args.batch], max_new_tokens=new) for i in range(0, n, args.batch)), [])

    gen(speech[:1])  # warm-up
    out = {}
    with all_position_logits(model):
        out["speech, logits at every prompt position"] = timed(lambda: gen(speech))
    out["speech, logits at the last position"] = timed(lambda: gen(speech))
    out["text ceiling, SpeechLM.generate"] = timed(lambda: gen(text))
    ref = model.config.llm
    if args.quick:  # the tiny pair's own LLM, saved where the converter can read it
        import tempfile

        ref = tempfile.mkdtemp(prefix="eval_generation_tiny_llm_")
        model.causal_lm.save_pretrained(ref)
        model.tokenizer.save_pretrained(ref)
    teacher = load_teacher(TeacherConfig(model=ref, backend="ctranslate2", batch_size=args.batch))
    msgs = [[{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": t["instruction"]}]
            for t in text]
    teacher.generate(msgs[:1], sampling=Sampling(max_new_tokens=4))  # warm-up
    out["text ceiling, ctranslate2 teacher"] = timed(
        lambda: [a[0] for a in teacher.generate(msgs, sampling=Sampling(max_new_tokens=new))])

    pairs = [("speech, logits at every prompt position", "speech, logits at the last position"),
             ("text ceiling, SpeechLM.generate", "text ceiling, ctranslate2 teacher")]
    rows, headline = [], {}
    for (before, after), key in zip(pairs, ("speech", "text_ceiling")):
        (a, ta), (b, tb) = out[before], out[after]
        same = sum(x == y for x, y in zip(a, b)) / n
        rows += [[before, ta, n / ta, "1.00x", ""], [after, tb, n / tb, f"{ta / tb:.2f}x", f"{same:.0%}"]]
        headline[f"{key}_speedup"], headline[f"{key}_same_answers"] = ta / tb, same
    table = print_table(
        f"Eval generation ({'tiny random pair' if args.quick else model.config.llm}), {n} rows, batch {args.batch}, "
        f"greedy, max_new_tokens={new}, {threads} threads",
        ["variant", "seconds", "rows/s", "speedup", "same replies"], rows)
    return Result("eval_generation", args.quick, threads, table, headline=headline,
                  data={k: {"seconds": t, "replies": r} for k, (r, t) in out.items()},
                  seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16, help="rows per variant")
    p.add_argument("--batch", type=int, default=8, help="rows per generate call")
    p.add_argument("--max-new-tokens", type=int, default=48, help="longest reply")
    args = p.parse_args(argv)
    run(args).write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
