"""Refit an adapter's voice gender head alone on labelled clips and report it on held-out ones.

The head (model.adapter.voice_gender_loss) is MLPs of their own on the voice token's inputs (3
pitch statistics and the clip's timbre averages), sharing nothing with the token the LLM reads, so
it can be fitted without touching anything else; training already does so after its last step
(model.adapter.voice_gender_fit_epochs). This does the same fit (`VoiceGenderHead.fit`) on the
clips of a clips JSONL (eval-mode inputs; male / female from `meta.gender`, none for
`meta.speech: false`; mixed speakers left out) for other epochs or seeds, and reports the held-out
accuracy of the adapter's head and of each refit; with `--out` it saves the adapter with the first
seed's head (for model.voice_line, whose prompt line says the head's verdict).

    python scripts/refit_voice_head.py runs/standard/train/adapter \
        --train-clips runs/standard/data/train_clips.jsonl \
        --heldout-clips runs/standard/data/heldout_clips.jsonl --epochs 100 --out runs/refit/adapter

`--heads N` refits a head of N averaged MLPs instead of the adapter's own count (saved with it);
`--pitch-view V` reports (and saves) the verdict with model.adapter.voice_gender_pitch_view = V,
the head's answer averaged with weight V with its answer on the pitch alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speech_adapter.audio import load_audio  # noqa: E402
from speech_adapter.errors import ConfigError  # noqa: E402
from speech_adapter.models.adapters import VoiceGenderHead  # noqa: E402
from speech_adapter.models.speechlm import SpeechLM  # noqa: E402
from speech_adapter.train.data import clip_voice  # noqa: E402 (the labels training gives the head)


@torch.no_grad()
def head_inputs(model: SpeechLM, clips_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(X (N, 3 + D'), y (N,)): the voice token's inputs (eval mode) and class indices of the
    labelled clips of `clips_path` (one clip at a time: memory stays flat)."""
    xs, ys = [], []
    for line in clips_path.read_text(encoding="utf-8").splitlines():
        clip = json.loads(line)
        label = clip_voice(clip)
        if label is None:
            continue
        xs.append(model.voice_inputs([load_audio(clip["audio"])])[0].float().cpu())
        ys.append(model.adapter.voice.GENDERS.index(label))
    if not xs:
        raise SystemExit(f"{clips_path}: no clip with meta.gender male/female or meta.speech false")
    return torch.stack(xs), torch.tensor(ys)


@torch.no_grad()
def accuracy(voice, head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(right, clips) over the spoken (male/female) clips: the verdict `voice` (a VoiceToken) gives
    with `head` as its gender head (model.adapter.voice_gender_pitch_view applies)."""
    spoken = y < 2
    right = int((voice.gender_probabilities(x[spoken], head).argmax(-1) == y[spoken]).sum())
    return right, int(spoken.sum())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("adapter", help="an adapter or export dir trained with model.adapter.voice_gender_loss")
    p.add_argument("--train-clips", required=True, type=Path, help="clips JSONL to fit on (audio, meta)")
    p.add_argument("--heldout-clips", required=True, type=Path, help="clips JSONL to report accuracy on")
    p.add_argument("--epochs", type=int, default=100, help="passes over the training clips (default 100); "
                   "0 keeps the adapter's head as trained (to report or save another --pitch-view)")
    p.add_argument("--seed", type=int, default=0, help="the saved head's seed")
    p.add_argument("--seeds", type=int, default=1, help="also fit seeds seed+1.. and report each (default 1)")
    p.add_argument("--heads", type=int, help="MLPs the refitted head averages (default: the adapter's "
                   "model.adapter.voice_gender_heads); saved into the config with --out")
    p.add_argument("--pitch-view", type=float, help="the verdict's weight on the head's answer with the "
                   "timbre zeroed (model.adapter.voice_gender_pitch_view; default: the adapter's own); "
                   "saved into the config with --out")
    p.add_argument("--out", type=Path, help="save the adapter with the seed's refitted head here")
    args = p.parse_args(argv)
    model = SpeechLM.from_pretrained(args.adapter)
    model.eval()
    voice = model.adapter.voice
    if voice is None or voice.gender is None:
        raise SystemExit("this adapter has no gender head: train with model.adapter.voice_gender_loss > 0")
    if args.epochs < 0:
        raise SystemExit(f"--epochs: must be >= 0, got {args.epochs}")
    if args.epochs == 0 and args.heads is not None:
        raise SystemExit("--heads needs a refit: give --epochs > 0")
    if args.pitch_view is not None:  # checked as the saved config will be on loading
        model.config.adapter.voice_gender_pitch_view = args.pitch_view
        try:
            model.config.adapter.validate()
        except ConfigError as e:
            raise SystemExit(f"--pitch-view: {e}") from None
        voice.gender_pitch_view = args.pitch_view
    x_test, y_test = head_inputs(model, args.heldout_clips)
    right, n = accuracy(voice, voice.gender, x_test, y_test)
    print(f"the adapter's head: {right}/{n} = {100 * right / n:.1f} % of the held-out spoken clips")
    saved, whose = voice.gender, "the adapter"
    if args.epochs:
        x_train, y_train = head_inputs(model, args.train_clips)
        heads = []
        for seed in range(args.seed, args.seed + args.seeds):
            head = copy.deepcopy(voice.gender)
            if args.heads is not None and args.heads != len(head.members):
                first = head.members[0]
                head = VoiceGenderHead(first[0].in_features, first[0].out_features, first[-1].out_features, args.heads)
            head.fit(x_train, y_train, args.epochs, seed, drop_timbre=voice.drop_timbre)
            right, n = accuracy(voice, head, x_test, y_test)
            print(f"refitted ({len(head.members)} heads), seed {seed}, {args.epochs} epochs on {len(y_train)} "
                  f"clips: {right}/{n} = {100 * right / n:.1f} %")
            heads.append(head)
        saved, whose = heads[0], f"seed {args.seed}"
    if args.out:
        voice.gender = saved
        model.config.adapter.voice_gender_heads = len(saved.members)
        model.save_adapter(args.out)
        print(f"saved {args.out} ({whose}'s head)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
