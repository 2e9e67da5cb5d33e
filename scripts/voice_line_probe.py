"""Which `model.voice_line` wording does the frozen LLM follow? Text only, no adapter: each
gendered clip's speech prompt with its transcript and its *true* gender written in by the line,
asked every plain gender phrasing (seen and unseen in training, with and without the option
list), greedy. A line the backbone follows here leaves the adapter nothing to override; where
the backbone answers "female" for a man whose line says "a man", only an adapter trained on
that phrasing can pull the answer back, and an unseen phrasing gets no such help.

    python scripts/voice_line_probe.py --clips runs/standard/data/heldout_clips.jsonl \\
        'I heard {person} say: "{transcript}"' \\
        'I heard {person} say: "{transcript}" The speaker is {voice}.'

Replies are read as the eval reads a gender answer (`parse_option`). Prints, per line, men and
women right of all asked and each phrasing that missed any; about 2 minutes a line for 16 clips
on 2 CPU cores.
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from speech_adapter.eval.scoring import parse_option
from speech_adapter.paths import resolve_model
from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, chat_messages, student_user_message
from speech_adapter.templates import TASKS, render, templates_for
from speech_adapter.utils.io import read_jsonl


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lines", nargs="+", help="voice_line wordings ('{person}', '{voice}', '{transcript}')")
    ap.add_argument("--clips", required=True, help="clips JSONL with transcript and meta.gender")
    ap.add_argument("--per-gender", type=int, default=8, help="clips of each gender (the first in the file)")
    ap.add_argument("--llm", default="offline:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = resolve_model(args.llm)
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = list(read_jsonl(args.clips))
    clips = [r for g in ("male", "female")
             for r in [r for r in rows if (r.get("meta") or {}).get("gender") == g and r.get("transcript")]
             [:args.per_gender]]
    phrasings = [v for t in templates_for("gender", kind="plain") for v in (t.as_bare(), t)]
    for line in args.lines:
        right = {"male": 0, "female": 0}
        asked = {"male": 0, "female": 0}
        for t in phrasings:
            prompts = [tok.apply_chat_template(chat_messages(DEFAULT_SYSTEM_PROMPT, student_user_message(
                render(t, r), "", r["transcript"], voice=r["meta"]["gender"], voice_line=line)),
                tokenize=False, add_generation_prompt=True) for r in clips]
            enc = tok(prompts, return_tensors="pt", padding=True)
            with torch.no_grad():
                out = llm.generate(**enc, max_new_tokens=12, do_sample=False)
            replies = tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
            miss = []
            for r, reply in zip(clips, replies):
                g = r["meta"]["gender"]
                asked[g] += 1
                # read as the eval reads a gender answer
                if parse_option(reply, ["female", "male"], TASKS["gender"].focus) == g:
                    right[g] += 1
                else:
                    miss.append(f"{g}: {reply.strip()[:40]!r}")
            if miss:
                print(f"  {t.id} ({t.split}): {len(miss)} wrong, e.g. {miss[0]}", flush=True)
        print(f"{line!r}: men {right['male']}/{asked['male']}, women {right['female']}/{asked['female']}",
              flush=True)


if __name__ == "__main__":
    main()
