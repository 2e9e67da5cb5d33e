"""What each offline backbone can do with the clip's description in hand: the text ceiling.

The same eval suite (every task, held-out clips, seen and unseen phrasings, half the rows asked
with a format rule) is answered by each LLM reading the DeSTA2-style description + instruction
(the eval's `text_ceiling` prompt: DEFAULT_SYSTEM_PROMPT + `teacher_user_message`), greedy, and
scored by the eval's own `score_row`/`aggregate`. Generation runs through the `ctranslate2`
teacher backend, whose greedy answers match `transformers` (benchmarks/teacher_generation.py).
Reported per LLM: accuracy seen/unseen, IF rate (constraint pass rate), JSON validity on rows
that ask for JSON, seconds.

    python -m benchmarks.text_ceiling --corpus runs/demo/data/described.jsonl \
        --exclude runs/demo/data/train_clips.jsonl [--llms offline:A,offline:B] [--n-per-task 4]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Result, base_parser, print_table, setup_threads

DEFAULT_LLMS = "offline:smollm2-135m-instruct,offline:qwen2.5-coder-0.5b-instruct,offline:qwen2.5-coder-1.5b-instruct"


def teacher_generate_fn(teacher, max_new_tokens: int):
    """A runner `generate(rows, mode)` answering the text_ceiling prompt with a data_prep Teacher."""
    from data_prep.teacher import Sampling
    from data_prep.teachers import load_teacher
    from speech_adapter.prompts import teacher_messages

    def generate(rows, mode):
        msgs = [teacher_messages(r["description"], r["instruction"]) for r in rows]
        return [a[0] for a in teacher.generate(msgs, sampling=Sampling(max_new_tokens=max_new_tokens))]

    return generate


def build(corpus: Path, exclude: list[Path], n_per_task: int, quick: bool):
    from speech_adapter.eval.suite import SuiteConfig, build_suite, load_rows, training_keys

    rows = load_rows(corpus)
    ids, audio = training_keys(exclude) if exclude else (set(), set())
    suite, stats = build_suite(rows, SuiteConfig(n_per_task=n_per_task, constrained_fraction=0.5, seed=0),
                               train_ids=ids, train_audio=audio)
    return suite[:12] if quick else suite


def run(args) -> Result:
    from data_prep.teacher import TeacherConfig, load_teacher
    from speech_adapter.eval.runner import evaluate

    t_start = time.perf_counter()
    threads = setup_threads(args.threads)
    suite = build(args.corpus, args.exclude, args.n_per_task, args.quick)
    json_rows = sum(any(c["id"] == "json" for c in r.get("constraints") or []) for r in suite)
    print(f"suite: {len(suite)} rows ({json_rows} ask for JSON)", flush=True)
    out, table_rows = {}, []
    for ref in args.llms.split(","):
        t0 = time.perf_counter()
        if args.quick:
            from benchmarks.teacher_generation import _tiny_dir
            ref = str(_tiny_dir())
        teacher = load_teacher(TeacherConfig(model=ref, backend="ctranslate2", batch_size=args.batch))
        report = evaluate(suite, {"text_ceiling": teacher_generate_fn(teacher, args.max_new_tokens)},
                          system=Path(ref).name, out_dir=args.work / Path(ref).name.replace(":", "_"),
                          batch_size=args.batch)
        m = report["modes"]["text_ceiling"]
        j = m["constraints"].get("json", {})
        r = {"accuracy_seen": m["accuracy_seen"], "accuracy_unseen": m["accuracy_unseen"], "if_rate": m["if_rate"],
             "json_valid": j.get("rate"), "json_rows": j.get("n", 0), "seconds": time.perf_counter() - t0,
             "constraints": {c: v["rate"] for c, v in m["constraints"].items()}}
        out[ref] = r
        print(f"{ref}: IF {r['if_rate']:.1%}, JSON {r['json_valid'] or 0:.1%} of {r['json_rows']}, "
              f"accuracy {r['accuracy_seen'] or 0:.1%}/{r['accuracy_unseen'] or 0:.1%}, {r['seconds']:.0f} s", flush=True)
        table_rows.append([ref.removeprefix("offline:"), f"{(r['accuracy_seen'] or 0):.1%}",
                           f"{(r['accuracy_unseen'] or 0):.1%}", f"{(r['if_rate'] or 0):.1%}",
                           f"{(r['json_valid'] or 0):.1%} ({r['json_rows']})", r["seconds"]])
        del teacher
    table = print_table(
        f"Text ceiling: each backbone reads the description, {len(suite)} held-out rows, half with a format rule",
        ["LLM", "accuracy seen", "accuracy unseen", "IF rate", "valid JSON (rows)", "seconds"], table_rows)
    return Result("text_ceiling", args.quick, threads, table,
                  headline={k.removeprefix("offline:") + "_if_rate": v["if_rate"] or 0.0 for k, v in out.items()},
                  data={"llms": out, "suite_rows": len(suite), "json_rows": json_rows},
                  seconds=time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True, help="described corpus JSONL (held-out clips)")
    p.add_argument("--exclude", type=Path, action="append", default=[], help="training clip ids/rows to leave out")
    p.add_argument("--llms", default=DEFAULT_LLMS, help="comma-separated LLM refs")
    p.add_argument("--n-per-task", type=int, default=6, help="rows per task and split")
    p.add_argument("--batch", type=int, default=16, help="prompts per generate call")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer")
    p.add_argument("--work", type=Path, default=Path("runs/text_ceiling"), help="generation caches (resumable)")
    args = p.parse_args(argv)
    run(args).write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
