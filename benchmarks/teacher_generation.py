"""Teacher generation for `data distill` and the text ceiling: transformers vs CTranslate2.

The teacher reads DeSTA2-style (description + instruction) prompts exactly as distill builds
them (system prompt + `teacher_user_message`), greedy. Variants, same prompts, same run:
`transformers` batched `generate` (left padding, stops at end of turn: the default backend),
the `ctranslate2` backend in float32 (the same LLM converted once; same greedy answers up to
kernel numerics) and in int8 (approximate). Each variant's answers are compared with the
transformers ones; rows/s and generated tokens/s are measured side by side.

    python -m benchmarks.teacher_generation [--quick] [--threads 2] [--rows 16] [--batch 8] [--model offline:NAME]
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


def load(quick: bool, batch: int, model: str, backend: str, dtype: str = "float32"):
    from data_prep.teacher import TeacherConfig
    from data_prep.teachers import load_teacher

    if quick:
        model = str(_tiny_dir())
    return load_teacher(TeacherConfig(model=model, backend=backend, dtype=dtype, batch_size=batch))


def _tiny_dir() -> Path:
    import tempfile

    from speech_adapter.models.tiny import tiny_llm

    d = Path(tempfile.gettempdir()) / "speech_adapter_bench_tiny_llm"
    if not (d / "config.json").exists():
        m, tok = tiny_llm(hidden=64)
        m.save_pretrained(d)
        tok.save_pretrained(d)
    return d


VARIANTS = [("transformers", "transformers", "float32"), ("ctranslate2 float32", "ctranslate2", "float32"),
            ("ctranslate2 int8", "ctranslate2", "int8")]


def run(args) -> Result:
    from data_prep.teacher import Sampling
    from speech_adapter.paths import OFFLINE_LLM

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    n = 4 if args.quick else args.rows
    model = args.model or OFFLINE_LLM
    sampling = Sampling(do_sample=False, max_new_tokens=8 if args.quick else args.max_new_tokens)
    ps = prompts(n)
    out, rows = {}, []
    for name, backend, dtype in VARIANTS:
        teacher = load(args.quick, args.batch, model, backend, dtype)
        teacher.generate(ps[:1], sampling=Sampling(do_sample=False, max_new_tokens=4))  # warm-up
        t0 = time.perf_counter()
        answers = [a[0] for a in teacher.generate(ps, sampling=sampling)]
        dt = time.perf_counter() - t0
        tokens = sum(len(teacher.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        out[name] = {"seconds": dt, "rows_per_s": n / dt, "tokens_per_s": tokens / dt, "answers": answers}
        del teacher
    ref = out["transformers"]
    for name, r in out.items():
        r["speedup"] = r["rows_per_s"] / ref["rows_per_s"]
        r["same_answers"] = sum(a == b for a, b in zip(r["answers"], ref["answers"])) / n
        rows.append([name, r["seconds"], r["rows_per_s"], r["tokens_per_s"], f"{r['speedup']:.2f}x",
                     f"{r['same_answers']:.0%}"])
    label = "tiny random LLM" if args.quick else model
    table = print_table(
        f"Teacher generation ({label}), {n} prompts, batch {args.batch}, greedy, "
        f"max_new_tokens={sampling.max_new_tokens}, {threads} threads",
        ["variant", "seconds", "rows/s", "tokens/s", "speedup", "same answers as transformers"], rows)
    fast = out["ctranslate2 float32"]
    print(f"ctranslate2 float32 vs transformers: {fast['speedup']:.2f}x, identical answers {fast['same_answers']:.0%}; "
          f"target >= 3x: {'met' if fast['speedup'] >= 3 else 'NOT met'}")
    return Result("teacher_generation", args.quick, threads, table,
                  headline={"ct2_speedup": fast["speedup"], "ct2_same_answers": fast["same_answers"],
                            "ct2_int8_speedup": out["ctranslate2 int8"]["speedup"],
                            "ct2_int8_same_answers": out["ctranslate2 int8"]["same_answers"],
                            "transformers_rows_per_s": ref["rows_per_s"], "model": label, "target": 3.0},
                  data=out, seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16, help="prompts to answer")
    p.add_argument("--batch", type=int, default=8, help="prompts per generate call (every variant)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer")
    p.add_argument("--model", default=None, help="teacher LLM (default: the offline default backbone)")
    args = p.parse_args(argv)
    run(args).write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
