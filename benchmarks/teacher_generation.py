"""Teacher generation for `data distill`: rows/s batched vs one prompt at a time.

The teacher is data_prep.teacher's `transformers` backend (left-padded batched `generate`,
stopping at end of turn) on the real SmolLM2-135M-Instruct (offline), reading DeSTA2-style
(description + instruction) prompts exactly as distill builds them (`data_prep.distill._messages`
layout: system prompt + `teacher_user_message`). Greedy decoding, so both variants produce the
same answers up to batch numerics; the agreement is reported.

    python -m benchmarks.teacher_generation [--quick] [--threads 2] [--rows 16] [--batch 8]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Result, base_parser, print_table, setup_threads

DESCRIPTIONS = [
    "[00:00-00:03] The quick brown fox jumps over the lazy dog. (Gender: Female, Pitch: High, "
    "Speaking speed: Fast, Volume: Normal, Accent: Scottish English, Duration: 3s)",
    "[00:00-00:05] Please remember to bring your umbrella tomorrow. (Gender: Male, Pitch: Low, "
    "Speaking speed: Slow, Volume: Loud, Accent: American English, Duration: 5s)",
    "[00:00-00:02] Good morning everyone. (Gender: Female, Pitch: Normal, Speaking speed: Normal, "
    "Volume: Quiet, Accent: British English, Duration: 2s)",
    "[00:00-00:04] The meeting starts at nine o'clock sharp. (Gender: Male, Pitch: High, "
    "Speaking speed: Fast, Volume: Normal, Accent: Caribbean English, Duration: 4s)",
]
INSTRUCTIONS = ["What can you hear?", "Describe the speaker's voice.", "What did the speaker say?",
                "Is the speaker male or female? Answer in one word.", "How fast does the speaker talk?"]


def prompts(n: int) -> list[list[dict]]:
    from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, teacher_user_message

    return [[{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
             {"role": "user", "content": teacher_user_message(DESCRIPTIONS[i % len(DESCRIPTIONS)],
                                                              INSTRUCTIONS[i % len(INSTRUCTIONS)])}]
            for i in range(n)]


def load(quick: bool, batch: int):
    from data_prep.teacher import TeacherConfig, TransformersTeacher, load_teacher

    if quick:
        from speech_adapter.models.tiny import tiny_llm

        model, tok = tiny_llm()
        return TransformersTeacher(model, tok, "tiny:llm", batch_size=batch)
    return load_teacher(TeacherConfig(batch_size=batch))


def run(args) -> Result:
    from data_prep.teacher import Sampling

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    n = 4 if args.quick else args.rows
    sampling = Sampling(do_sample=False, max_new_tokens=8 if args.quick else args.max_new_tokens)
    teacher = load(args.quick, args.batch)
    ps = prompts(n)
    teacher.generate(ps[:1], sampling=Sampling(do_sample=False, max_new_tokens=4))  # warm-up
    out, rows = {}, []
    for bs in ([1, args.batch] if args.batch > 1 else [1]):
        teacher.batch_size = bs
        t0 = time.perf_counter()
        answers = [a[0] for a in teacher.generate(ps, sampling=sampling)]
        dt = time.perf_counter() - t0
        words = sum(len(a.split()) for a in answers)
        out[bs] = {"seconds": dt, "rows_per_s": n / dt, "answers": answers, "words": words}
        rows.append([f"batch_size={bs}", dt, n / dt, words / dt])
    one, many = out[1], out[max(out)]
    speedup = many["rows_per_s"] / one["rows_per_s"]
    same = sum(a == b for a, b in zip(one["answers"], many["answers"])) / n
    rows.append(["speedup", "", speedup, ""])
    table = print_table(
        f"Teacher generation ({'tiny random LLM' if args.quick else 'SmolLM2-135M-Instruct'}), {n} prompts, "
        f"greedy, max_new_tokens={sampling.max_new_tokens}",
        ["variant", "seconds", "rows/s", "words/s"], rows)
    print(f"identical answers batched vs one at a time: {same:.0%}")
    return Result("teacher_generation", args.quick, threads, table,
                  headline={"batched_speedup": speedup, "batch_size": max(out),
                            "rows_per_s_batched": many["rows_per_s"], "same_answers": same},
                  data={str(k): v for k, v in out.items()}, seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16, help="prompts to answer")
    p.add_argument("--batch", type=int, default=8, help="batched variant's batch size")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer")
    args = p.parse_args(argv)
    run(args).write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
