"""The `speech-adapter` command: a plain mapping from subcommand to the module that runs it.

Each command module defines `configure(parser)` (light imports only, so `--help` is fast) and
`main(args) -> int`. Errors a user can act on (`SpeechAdapterError`) print as one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from speech_adapter.version import __version__
from speech_adapter.errors import SpeechAdapterError

# subcommand -> (module, one-line help)
COMMANDS = {
    "models": ("speech_adapter.offline_models.cli", "prepare and list the offline default models"),
    "data": ("data_prep.cli", "build training rows: synth, import, attributes, describe, distill"),
    "train": ("speech_adapter.train.cli", "train an adapter from a recipe"),
    "eval": ("speech_adapter.eval.cli", "build eval suites, evaluate runs, compare them"),
    "export": ("speech_adapter.export", "export a trained adapter to a portable directory"),
    "chat": ("speech_adapter.inference.chat", "talk to a speech model about audio clips"),
    "infer": ("speech_adapter.inference.batch", "batched inference over a JSONL of clips"),
    "serve": ("speech_adapter.serve.cli", "serve an export: OpenAI-compatible audio chat API and a web page"),
    "run": ("speech_adapter.pipeline", "run a recipe end to end: data, distill, train, eval, export"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speech-adapter",
        description="Turn a frozen text LLM into a spoken-language model by self-distillation.",
    )
    parser.add_argument("--version", action="version", version=f"speech-adapter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after an option (`run r.yaml --until train seed=1`) are overrides too
        if isinstance(getattr(args, "overrides", None), list) and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.parse_args(argv)  # argparse's own error naming what it does not know
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._main(args) or 0)
    except SpeechAdapterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, read-only or missing dir, permissions: the user's to fix
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:
        if type(e).__name__ != "SafetensorError":  # safetensors' I/O errors (e.g. disk full on save)
            raise
        print(f"error: safetensors: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
