"""Refit an adapter's voice gender head alone, longer than the adapter's training gave it.

The head (model.adapter.voice_gender_loss) is an MLP of its own on the voice token's inputs (3
pitch statistics and the clip's timbre averages), sharing nothing with the token the LLM reads, so
it can be fitted after the run without touching anything else: this reads those inputs for the
training clips (eval mode), fits a fresh head on their labels (male / female from `meta.gender`,
none for `meta.speech: false`; mixed speakers left out) with the adapter's own timbre dropout, and
reports its accuracy on held-out clips; with `--out` it saves the adapter with the new head (for
model.voice_line, whose prompt line says the head's verdict).

    python scripts/refit_voice_head.py runs/standard/train/adapter \
        --train-clips runs/standard/data/train_clips.jsonl \
        --heldout-clips runs/standard/data/heldout_clips.jsonl --epochs 100 --out runs/refit/adapter
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speech_adapter.audio import load_audio  # noqa: E402
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


def fit_head(template: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
             drop_timbre, lr: float = 1e-3, batch_size: int = 8) -> nn.Module:
    """A fresh copy of `template`'s architecture fitted on (x, y) with AdamW, the timbre
    (x[:, 3:]) dropped by `drop_timbre` as the adapter's training drops it
    (`VoiceToken.drop_timbre`)."""
    torch.manual_seed(seed)
    head = copy.deepcopy(template)
    for layer in head.modules():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(batch_size):
            xb = x[idx]
            loss = nn.functional.cross_entropy(head(torch.cat([xb[:, :3], drop_timbre(xb[:, 3:])], -1)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


@torch.no_grad()
def accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(right, clips) over the spoken (male/female) clips."""
    spoken = y < 2
    right = int((head(x[spoken]).argmax(-1) == y[spoken]).sum())
    return right, int(spoken.sum())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("adapter", help="an adapter or export dir trained with model.adapter.voice_gender_loss")
    p.add_argument("--train-clips", required=True, type=Path, help="clips JSONL to fit on (audio, meta)")
    p.add_argument("--heldout-clips", required=True, type=Path, help="clips JSONL to report accuracy on")
    p.add_argument("--epochs", type=int, default=100, help="passes over the training clips (default 100)")
    p.add_argument("--seed", type=int, default=0, help="the saved head's seed")
    p.add_argument("--seeds", type=int, default=1, help="also fit seeds seed+1.. and report each (default 1)")
    p.add_argument("--out", type=Path, help="save the adapter with the seed's refitted head here")
    args = p.parse_args(argv)
    model = SpeechLM.from_pretrained(args.adapter)
    model.eval()
    voice = model.adapter.voice
    if voice is None or voice.gender is None:
        raise SystemExit("this adapter has no gender head: train with model.adapter.voice_gender_loss > 0")
    x_train, y_train = head_inputs(model, args.train_clips)
    x_test, y_test = head_inputs(model, args.heldout_clips)
    right, n = accuracy(voice.gender, x_test, y_test)
    print(f"the adapter's head: {right}/{n} = {100 * right / n:.1f} % of the held-out spoken clips")
    heads = []
    for seed in range(args.seed, args.seed + args.seeds):
        head = fit_head(voice.gender, x_train, y_train, args.epochs, seed, voice.drop_timbre)
        right, n = accuracy(head, x_test, y_test)
        print(f"refitted, seed {seed}, {args.epochs} epochs on {len(y_train)} clips: {right}/{n} = "
              f"{100 * right / n:.1f} %")
        heads.append(head)
    if args.out:
        voice.gender.load_state_dict(heads[0].state_dict())
        model.save_adapter(args.out)
        print(f"saved {args.out} (seed {args.seed}'s head)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
