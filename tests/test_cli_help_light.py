"""`speech-adapter --help` and every `speech-adapter <cmd> [<action>] --help` stay light.

`cli.build_parser` imports every command module and calls its `configure`; the project imports
inside those modules sit at the top of the file, so a project module that pulls torch (models,
inference.api, train.loop, ...) must stay a lazy import there (`# lazy: torch`). This test fails
when one of them reaches the top of a module the parser imports. It runs in a fresh interpreter:
the test process itself has torch loaded by other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# heavy or optional libraries that only the commands' work may load, never their --help
HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "ctranslate2", "onnxruntime",
         "kokoro_onnx", "librosa", "matplotlib", "scipy", "starlette", "uvicorn", "vllm")

CHILD = """
import argparse, contextlib, io, json, sys
import speech_adapter.cli as cli

def subparsers(parser):
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]

parser = cli.build_parser()
argvs = [[]]
for top in subparsers(parser):
    for name, sub in top.choices.items():
        argvs.append([name])
        argvs += [[name, action] for inner in subparsers(sub) for action in inner.choices]
for argv in argvs:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            parser.parse_args(argv + ["--help"])
        except SystemExit:
            pass
    assert out.getvalue().startswith("usage:"), argv
heavy = json.loads(sys.argv[1])
print(json.dumps({"argvs": len(argvs), "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_help_of_every_command_imports_no_heavy_library():
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(HEAVY)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["argvs"] > 10  # the top level, each command and each command's actions
    assert out["loaded"] == [], f"`--help` imports {out['loaded']}: keep that project import inside its function"
