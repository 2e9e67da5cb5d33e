"""`speech-adapter chat`: talk to a speech model about audio clips, streaming the reply.

    speech-adapter chat --model OUT --audio clip.wav "What can you hear?"   # one shot
    speech-adapter chat --model OUT [--audio clip.wav]                       # interactive

Interactive commands: `/audio PATH` queues a clip for the next question (several clips and
several turns per conversation), `/reset` clears the history, `/quit` (or EOF) leaves.
Long audio: clips over 30 s are cut into <= 30 s pieces, one placeholder each, in order
(see `inference.api`). Follows the streaming chat loops of Ultravox / Qwen2-Audio demos.
"""

from __future__ import annotations

import argparse
import sys

from speech_adapter.errors import ConfigError, SpeechAdapterError
from speech_adapter.prompts import REPETITION_PENALTY

HELP_LONG = "clips over 30 s are cut into <= 30 s pieces, each its own audio segment, in order"


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by `chat` and `infer`."""
    parser.add_argument("--model", required=True, help="export dir (speech-adapter export), adapter or run dir")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="reply length limit in tokens")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; > 0 samples")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when sampling")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    parser.add_argument("--repetition-penalty", type=float, default=REPETITION_PENALTY,
                        help="penalty on tokens the reply already holds, which ends a small LLM's loops "
                             f"(default {REPETITION_PENALTY}, Qwen2.5's own; 1 = none)")
    parser.add_argument("--system", default=None, help="system prompt (default: prompts.DEFAULT_SYSTEM_PROMPT, the one distill and training use)")
    parser.add_argument("--no-system", action="store_true", help="no system turn (the template's default applies)")
    parser.add_argument("--ignore-mismatch", action="store_true",
                        help="load even if the base models differ from the recorded ones")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the LLM dir")


def system_prompt(args):
    from speech_adapter.inference.api import USE_DEFAULT  # lazy: torch

    if args.no_system:
        return None
    return args.system if args.system is not None else USE_DEFAULT


def gen_kwargs(args) -> dict:
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens: must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError(f"--temperature: must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p: must be in (0, 1], got {args.top_p}")
    if args.repetition_penalty <= 0:
        raise ConfigError(f"--repetition-penalty: must be > 0 (1 = none), got {args.repetition_penalty}")
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
            "top_p": args.top_p, "seed": args.seed, "repetition_penalty": args.repetition_penalty}


def load_model(args):
    from speech_adapter.inference.api import load  # lazy: torch

    return load(args.model, ignore_mismatch=args.ignore_mismatch, trust_remote_code=args.trust_remote_code)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = f"Long audio: {HELP_LONG}. Interactive: /audio PATH, /reset, /quit."
    add_generation_args(parser)
    parser.add_argument("--audio", action="append", default=[], help="audio clip (repeatable); " + HELP_LONG)
    parser.add_argument("instruction", nargs="?", help="the question; omit it for an interactive session")


def _say(conv, instruction: str, gen: dict, out) -> None:
    for delta in conv.stream(instruction, **gen):
        out.write(delta)
        out.flush()
    out.write("\n")
    out.flush()


def repl(conv, gen: dict, inp=None, out=None) -> None:
    """The interactive loop over `inp` lines (stdin by default)."""
    inp, out = inp or sys.stdin, out or sys.stdout
    interactive = hasattr(inp, "isatty") and inp.isatty()
    out.write("chat: /audio PATH adds a clip, /reset clears, /quit leaves\n")
    while True:
        if interactive:
            out.write("> ")
            out.flush()
        line = inp.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        try:
            if line in ("/quit", "/exit"):
                break
            if line == "/reset":
                conv.reset()
                out.write("(history cleared)\n")
            elif line.startswith("/audio"):
                path = line[len("/audio"):].strip()
                if not path:
                    out.write("usage: /audio PATH\n")
                    continue
                n = conv.add_audio(path)
                out.write(f"(added {path}" + (f", {n} pieces of <= 30 s" if n > 1 else "") + ")\n")
            elif line.startswith("/"):
                out.write(f"unknown command {line.split()[0]}; use /audio PATH, /reset, /quit\n")
            else:
                _say(conv, line, gen, out)
        except SpeechAdapterError as e:  # a bad clip or prompt: say so, keep the conversation
            out.write(f"error: {e}\n")
        out.flush()


def main(args) -> int:
    from speech_adapter.inference.api import Conversation, audio_pieces  # lazy: torch

    gen = gen_kwargs(args)
    clips = [audio_pieces(p) for p in args.audio]  # bad audio fails before the model loads
    conv = Conversation(load_model(args), system=system_prompt(args))
    conv.pending = clips
    if args.instruction is not None:
        _say(conv, args.instruction, gen, sys.stdout)
        return 0
    repl(conv, gen)
    return 0
