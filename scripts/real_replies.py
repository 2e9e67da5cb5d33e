"""Replies of a trained model to varied instructions on real recordings, verbatim, as Markdown.

    python scripts/real_replies.py runs/standard/export --out docs/standard_replies.md

Five clips of the `real` suite (two women, two men, a robin) × ten instructions the
model never saw in training, greedy, unedited: the README shows them, bad ones included, so a
reader judges the model by its answers and not only by a metric.
"""

from __future__ import annotations

import argparse
import sys

CLIPS = ["arctic-aew-a0001", "vctk-p240", "whisper-jfk", "arctic-axb-a0004", "animal-robin"]
INSTRUCTIONS = [
    "What can you hear in this recording?",
    "Is the speaker a man or a woman?",
    "Transcribe the audio exactly.",
    'Answer in JSON with the keys "gender" and "transcript".',
    "Is there any speech in this clip? Answer yes or no.",
    "Describe the speaker's voice in one short sentence, all in lowercase.",
    "List three things you notice about this audio as bullet points.",
    "How fast is the speaker talking: slow, normal or fast?",
    "What kind of sound is this: speech, music, noise, an animal, or silence?",
    "Summarize what is said in at most ten words.",
]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>").replace("<", "&lt;").replace(">", "&gt;") \
        .replace("&lt;br&gt;", "<br>")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an export / adapter / run dir")
    ap.add_argument("--out", default=None, help="Markdown file to write (default: stdout)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args(argv)

    from speech_adapter.audio import load_audio
    from speech_adapter.eval.real import load_real_corpus
    from speech_adapter.inference.api import load
    from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT
    from speech_adapter.utils.io import write_text_atomic

    rows = {r["id"]: r for r in load_real_corpus()}
    model = load(args.model)
    lines = [f"Replies of `{args.model}`, greedy, max {args.max_new_tokens} new tokens, unedited "
             f"(`python scripts/real_replies.py {args.model}`).", ""]
    for cid in CLIPS:
        r = rows[cid]
        m = r.get("meta") or {}
        label = ", ".join(x for x in (m.get("gender"), "no speech" if m.get("speech") is False else None,
                                      m.get("sound")) if x)
        said = f' — said: "{r["transcript"]}"' if r.get("transcript") else ""
        lines += [f"**{cid}** ({label}; {r['duration']:.1f} s){said}", "",
                  "| instruction | reply |", "|---|---|"]
        audio = load_audio(r["audio"])
        examples = [{"audio": audio, "instruction": q, "response": None, "system": DEFAULT_SYSTEM_PROMPT,
                     "transcript": None, "description": None} for q in INSTRUCTIONS]
        replies = model.generate(examples, max_new_tokens=args.max_new_tokens)
        for q, a in zip(INSTRUCTIONS, replies):
            lines.append(f"| {_cell(q)} | {_cell(a.strip())} |")
        lines.append("")
        print(f"{cid}: done", file=sys.stderr)
    text = "\n".join(lines)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
