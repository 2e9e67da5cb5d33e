"""`speech-adapter data ...`: synth, import, attributes, describe, transcribe, distill, magpie.

Light imports only at parser-build time (so `--help` is fast); each subcommand's work is
imported inside its `main`. distill's and magpie's parsers and mains come from their modules.
"""

from __future__ import annotations

import argparse
import importlib
import json

from data_prep.asr import TranscribeConfig
from data_prep.config import (AttributesConfig, DescribeConfig, ImportConfig, SynthConfig,
                              add_config_args, config_from_args)


def _synth(args) -> int:
    from data_prep.synth import synth_corpus

    cfg = config_from_args(SynthConfig, args)
    res = synth_corpus(cfg, progress=not args.quiet)
    print(f"synth: wrote {res['written']} clips to {res['output']}; {res['skipped']} already done; "
          f"{res['total']} in this shard")
    return 0


def _attributes(args) -> int:
    from data_prep import attributes

    cfg = config_from_args(AttributesConfig, args)
    res = attributes.run_attributes(cfg, progress=not args.quiet)
    print(res["summary"])
    if cfg.agreement:
        from speech_adapter.utils.io import read_jsonl

        table = attributes.agreement(read_jsonl(cfg.output, strict=False))
        print(attributes.format_agreement(table))
    return 0


def _import(args) -> int:
    from data_prep.importers import run_import

    cfg = config_from_args(ImportConfig, args)
    res = run_import(cfg, progress=not args.quiet)
    print(res["summary"])
    return 0


def _describe(args) -> int:
    from data_prep.describe import run_describe

    cfg = config_from_args(DescribeConfig, args)
    res = run_describe(cfg, progress=not args.quiet)
    print(res["summary"])
    if args.show:
        from speech_adapter.utils.io import iter_jsonl

        for i, row in enumerate(iter_jsonl(cfg.output, strict=False)):
            if i >= args.show:
                break
            print(json.dumps(row.get("description"), ensure_ascii=False))
    return 0


def _transcribe(args) -> int:
    from data_prep.asr import transcribe_corpus

    cfg = config_from_args(TranscribeConfig, args)
    res = transcribe_corpus(cfg, progress=not args.quiet)
    print(f"transcribe: {res['transcribed']} clips transcribed, {res['reused']} rows reused → {cfg.output}")
    return 0


SUBCOMMANDS = {
    "synth": (SynthConfig, _synth, "synthesise an espeak-ng speech corpus with exact metadata"),
    "import": (ImportConfig, _import, "import a local folder + labels or a saved datasets dataset"),
    "attributes": (AttributesConfig, _attributes, "measure pitch, loudness, rate, SNR; bin them"),
    "describe": (DescribeConfig, _describe, "write the DeSTA2.5 seed description of each clip"),
    "transcribe": (TranscribeConfig, _transcribe, "Whisper's own transcript of each clip (asr_transcript), "
                   "for use_transcript and the cascade baseline"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    for name, (cls, fn, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=(cls.__doc__ or help_text).strip())
        add_config_args(p, cls)
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "describe":
            p.add_argument("--show", type=int, default=0, help="print the first N descriptions")
        p.set_defaults(_data_main=fn)
    # distill and magpie live in their own modules, which build their own flags
    for name, module, help_text in (
            ("distill", "data_prep.distill", "the frozen LLM answers instructions about each description"),
            ("magpie", "data_prep.magpie", "Magpie pseudo-replay: the LLM writes and answers its own instructions")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.configure(p)
        p.set_defaults(_data_main=mod.main)


def main(args) -> int:
    return int(args._data_main(args) or 0)
