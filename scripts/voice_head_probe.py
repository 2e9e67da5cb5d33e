"""Does the voice token know the gender the model then says? For a model trained with
`model.adapter.voice_gender_loss`, the gender head's verdict on every gendered clip of a clips file,
per voice, and (with `--scores`, a voice probe's or eval's `scores.jsonl` on the same clips) how
often the LLM's gender answer agrees with the head.

    python scripts/voice_head_probe.py runs/standard/train/adapter \\
        --clips runs/standard/data/heldout_clips.jsonl \\
        --scores runs/voice_probe30/heldout_clips/s30/scores.jsonl --out docs/voice_head_s30.md

The head is unused at inference; this reads it to tell a voice token that misjudges a voice
from an LLM that does not follow a voice token that judged it right.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speech_adapter.audio import load_audio  # noqa: E402
from speech_adapter.models.speechlm import SpeechLM  # noqa: E402
from speech_adapter.utils.io import iter_jsonl  # noqa: E402


def voice_name(meta: dict) -> str:
    """A clip's voice for the table: the Kokoro voice (or mix), or the engine's name."""
    return str(meta.get("voice")) if meta.get("source") == "kokoro" else str(meta.get("source") or "?")


def head_verdicts(model: SpeechLM, clips: list[dict]) -> dict[str, tuple[str, str, str]]:
    """{clip id: (head's verdict, true gender, voice)} for clips whose `meta.gender` is male/female;
    the verdict is one of the head's classes (male, female, none = no speech)."""
    voice = model.adapter.voice
    if voice is None or voice.gender is None:
        raise SystemExit("this adapter has no gender head: train with model.adapter.voice_gender_loss > 0")
    out = {}
    for clip in clips:
        meta = clip.get("meta") or {}
        truth = meta.get("gender")
        if truth not in ("male", "female"):
            continue
        probs = model.voice_probabilities([load_audio(clip["audio"])])[0]
        out[clip["id"]] = (voice.GENDERS[int(probs.argmax())], truth, voice_name(meta))
    return out


def agreement(verdicts: dict, scores_path: Path) -> collections.Counter:
    """(head right, LLM right) -> gender rows, over the rows of `scores_path` on clips in `verdicts`."""
    counts = collections.Counter()
    for row in iter_jsonl(scores_path):
        clip = str(row["id"]).split("::")[0]
        if row.get("task") != "gender" or row.get("mode", "speech") != "speech" or clip not in verdicts:
            continue
        head, truth, _ = verdicts[clip]
        counts[(head == truth, row.get("score") == 1.0)] += 1
    return counts


def report(verdicts: dict, counts: collections.Counter | None) -> str:
    per_voice = collections.defaultdict(lambda: [0, 0])
    for head, truth, name in verdicts.values():
        per_voice[name][0] += head == truth
        per_voice[name][1] += 1
    right = sum(r for r, _ in per_voice.values())
    lines = [f"Gender head right on {right} of {len(verdicts)} clips "
             f"({100 * right / max(len(verdicts), 1):.1f} %).", "",
             "| voice | head right / clips |", "|---|---|"]
    lines += [f"| `{name}` | {r}/{n} |" for name, (r, n) in sorted(per_voice.items())]
    if counts is not None:
        lines += ["", "The LLM's gender answers on the same clips against the head's verdict:", "",
                  "| | LLM right | LLM wrong |", "|---|---|---|",
                  f"| head right | {counts[(True, True)]} | {counts[(True, False)]} |",
                  f"| head wrong | {counts[(False, True)]} | {counts[(False, False)]} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapter", help="an adapter or export dir trained with model.adapter.voice_gender_loss")
    p.add_argument("--clips", required=True, help="clips JSONL with audio and meta.gender (e.g. heldout_clips.jsonl)")
    p.add_argument("--scores", help="scores.jsonl of the same model's gender answers on these clips")
    p.add_argument("--out", help="also write the Markdown here")
    args = p.parse_args(argv)
    model = SpeechLM.from_pretrained(args.adapter)
    model.eval()
    verdicts = head_verdicts(model, list(iter_jsonl(Path(args.clips))))
    text = report(verdicts, agreement(verdicts, Path(args.scores)) if args.scores else None)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
