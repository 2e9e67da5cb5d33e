"""`speech-adapter data ...`: synth, import, attributes, describe, transcribe, distill, magpie.

Each subcommand has one flag per setting of its config dataclass; `--recipe RECIPE.yaml` takes
the settings (and the paths `speech-adapter run` would use) from that recipe's section through
the shared reader, `speech_adapter.recipe.load_recipe`; explicit flags override either.
Light imports only at parser-build time (so `--help` is fast); each subcommand's work is
imported inside its function.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from data_prep import attributes
from data_prep.asr import TranscribeConfig, transcribe_corpus
from data_prep.config import (AttributesConfig, DescribeConfig, ImportConfig, SynthConfig,
                              add_config_args, config_from_args)
from data_prep.describe import run_describe
from data_prep.distill import STAGE, STATS_NAME, DistillConfig, distill, format_table
from data_prep.importers import run_import
from data_prep.magpie import MagpieConfig, magpie
from data_prep.rows import RejectLog, read_rows
from data_prep.synth import synth_corpus
from speech_adapter.config import to_dict
from speech_adapter.errors import ConfigError
from speech_adapter.recipe import SECTION_CONFIGS, load_recipe
from speech_adapter.utils.io import iter_jsonl, read_jsonl


def _synth(cfg: SynthConfig, args) -> int:
    res = synth_corpus(cfg, progress=not args.quiet)
    print(f"synth: wrote {res['written']} clips to {res['output']}; {res['skipped']} already done; "
          f"{res['total']} in this shard")
    return 0


def _attributes(cfg: AttributesConfig, args) -> int:
    res = attributes.run_attributes(cfg, progress=not args.quiet)
    print(res["summary"])
    if cfg.agreement:
        table = attributes.agreement(read_jsonl(cfg.output, strict=False))
        print(attributes.format_agreement(table))
    return 0


def _import(cfg: ImportConfig, args) -> int:
    res = run_import(cfg, progress=not args.quiet)
    print(res["summary"])
    return 0


def _describe(cfg: DescribeConfig, args) -> int:
    res = run_describe(cfg, progress=not args.quiet)
    print(res["summary"])
    if args.show:
        for i, row in enumerate(iter_jsonl(cfg.output, strict=False)):
            if i >= args.show:
                break
            print(json.dumps(row.get("description"), ensure_ascii=False))
    return 0


def _transcribe(cfg: TranscribeConfig, args) -> int:
    res = transcribe_corpus(cfg, progress=not args.quiet)
    print(f"transcribe: {res['transcribed']} clips transcribed, {res['reused']} rows reused → {cfg.output}")
    return 0


def _distill(cfg: DistillConfig, args) -> int:
    with RejectLog(cfg.output, STAGE) as rejects:
        rows = read_rows(cfg.input, rejects)
    stats = distill(rows, cfg)
    print(format_table(stats))
    out = Path(cfg.output).parent
    print(f"distill: {stats['kept']} rows -> {cfg.output}; rejects -> {out / 'rejects.jsonl'}; "
          f"stats -> {out / STATS_NAME}")
    return 0


def _magpie(cfg: MagpieConfig, args) -> int:
    stats = magpie(cfg)
    print(f"magpie: kept {stats['kept']} of {stats['candidates']} candidates -> {cfg.output} "
          f"({stats['rejected']} rejected, {stats['skipped']} already done, {stats['rows_per_s']} slots/s)")
    return 0


# subcommand -> (config class, runner(cfg, args), one-line help)
SUBCOMMANDS = {
    "synth": (SynthConfig, _synth, "synthesise an espeak-ng speech corpus with exact metadata"),
    "import": (ImportConfig, _import, "import a local folder + labels or a saved datasets dataset"),
    "attributes": (AttributesConfig, _attributes, "measure pitch, loudness, rate, SNR; bin them"),
    "describe": (DescribeConfig, _describe, "write the DeSTA2.5 seed description of each clip"),
    "transcribe": (TranscribeConfig, _transcribe, "Whisper's own transcript of each clip (asr_transcript), "
                   "for use_transcript and the cascade baseline"),
    "distill": (DistillConfig, _distill, "the frozen LLM answers instructions about each description"),
    "magpie": (MagpieConfig, _magpie, "Magpie pseudo-replay: the LLM writes and answers its own instructions"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    for name, (cls, _, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=(cls.__doc__ or help_text).strip())
        add_config_args(p, cls)
        if cls in SECTION_CONFIGS:
            p.add_argument("--recipe", default=None,
                           help="take the settings and paths from this recipe's section (flags override it)")
        p.add_argument("--dry-run", action="store_true", help="validate the settings, print them, and stop")
        if "quiet" not in {f for f in cls.__dataclass_fields__}:
            p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "describe":
            p.add_argument("--show", type=int, default=0, help="print the first N descriptions")


def main(args) -> int:
    cls, run, _ = SUBCOMMANDS[args.data_command]
    base = None
    if getattr(args, "recipe", None):
        if args.config:
            raise ConfigError("--recipe and --config: give one of them")
        base = to_dict(load_recipe(args.recipe).section_config(cls))
    cfg = config_from_args(cls, args, base)
    if args.dry_run:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    return int(run(cfg, args) or 0)
