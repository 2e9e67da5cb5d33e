"""Which words of the LLM's vocabulary the adapter's audio tokens sit nearest, clip by clip.

    python scripts/adapter_tokens.py runs/standard/export --out docs/adapter_tokens.md

The adapter writes vectors into the LLM's input embedding space; a frozen LLM reads a vector
that lies close to one word's embedding much as it reads that word, and may copy it into a reply.
For each clip of the `real` suite (or the files given with --clips), every audio token's nearest
vocabulary tokens by cosine similarity, and its norm against the vocabulary's typical norm: a
token that always lands on one word ("Sibling" in every bullet list, session 16) shows here.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_CLIPS = ["arctic-aew-a0001", "vctk-p240", "whisper-jfk", "arctic-axb-a0004", "animal-robin"]


def nearest(vectors, table, k: int):
    """(cosine, index) of the k rows of `table` nearest each of `vectors` (N, H) by cosine."""
    import torch

    v = torch.nn.functional.normalize(vectors.float(), dim=-1)
    t = torch.nn.functional.normalize(table.float(), dim=-1)
    return (v @ t.T).topk(k, dim=-1)


def audio_tokens(model, audio):
    """The adapter's outputs for one clip, (N, H): the voice token first where the model has one."""
    import torch

    batch = model.processor.collate([{"audio": audio, "instruction": "?", "response": None, "system": None,
                                      "transcript": "", "description": None}], "audio", padding="left")
    with torch.no_grad():
        states, lengths = model.encode_audio(batch)
        out, n_tok = model.adapter(states.to(model.device, next(model.adapter.parameters()).dtype),
                                   lengths.to(model.device))
    return torch.cat([o[:n] for o, n in zip(out, n_tok.tolist())])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an export / adapter / run dir")
    ap.add_argument("--clips", nargs="*", default=None,
                    help="audio files or `real` suite clip ids (default: five real clips)")
    ap.add_argument("--top", type=int, default=3, help="nearest vocabulary tokens shown per audio token")
    ap.add_argument("--positions", type=int, default=6, help="audio tokens shown per clip, from the first")
    ap.add_argument("--out", default=None, help="Markdown file to write (default: stdout)")
    args = ap.parse_args(argv)

    import torch

    from speech_adapter.audio import load_audio
    from speech_adapter.eval.real import load_real_corpus
    from speech_adapter.inference.api import load
    from speech_adapter.utils.io import write_text_atomic

    model = load(args.model)
    table = model.causal_lm.get_input_embeddings().weight.detach()
    typical = float(table.float().norm(dim=-1).median())
    real = {r["id"]: r for r in load_real_corpus()}
    voice = getattr(model.adapter, "voice", None) is not None
    lines = [f"Nearest vocabulary tokens of `{args.model}`'s audio tokens (cosine; |v| = the token's norm "
             f"over the vocabulary's median norm {typical:.3f}){'; position 0 is the voice token' if voice else ''}.",
             "", "| clip | position | \\|v\\| | nearest tokens |", "|---|---|---|---|"]
    for clip in args.clips or DEFAULT_CLIPS:
        path = real[clip]["audio"] if clip in real else clip
        vectors = audio_tokens(model, load_audio(path))
        sims, idx = nearest(vectors, table, args.top)
        for pos in range(min(args.positions, len(vectors))):
            words = ", ".join(f"{model.tokenizer.decode([int(i)])!r} {float(s):.2f}"
                              for s, i in zip(sims[pos], idx[pos]))
            norm = float(vectors[pos].float().norm()) / typical
            lines.append(f"| {clip} | {pos}{' (voice)' if voice and pos == 0 else ''} | {norm:.2f} | "
                         f"{words.replace('|', chr(92) + '|')} |")
        print(f"{clip}: {len(vectors)} audio tokens", file=sys.stderr)
    text = "\n".join(lines)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
