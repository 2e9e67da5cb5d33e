"""A full disk and a read-only output dir: every writing command exits 2 with one `error:` line.

Real faults where the machine allows it (a tmpfs filled to the last byte, a read-only tmpfs;
mounting needs root), and a simulated ENOSPC/EROFS (open() for writing raises) that runs anywhere.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from speech_adapter.cli import main
from tests.reliability.cases import SR, tone

ROOT = Path(__file__).resolve().parents[2]


def _mount(target: Path, opts: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], capture_output=True)
    return r.returncode == 0


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """{"full": dir on a full filesystem, "readonly": dir on a read-only one}, real mounts."""
    base = Path("/tmp") / f"reliability-{uuid.uuid4().hex[:8]}"
    dirs = {"full": base / "full", "readonly": base / "ro"}
    if os.geteuid() != 0 or not _mount(dirs["full"], "size=64k"):
        pytest.skip("real disk faults need root to mount a tmpfs; the simulated test below still runs")
    _mount(dirs["readonly"], "ro,size=16k")
    try:
        with open(dirs["full"] / "filler", "wb") as f:
            f.write(b"\0" * (1 << 20))
    except OSError as e:
        assert e.errno == errno.ENOSPC
    yield dirs
    for d in dirs.values():
        subprocess.run(["umount", str(d)], capture_output=True)
    subprocess.run(["rm", "-rf", str(base)], capture_output=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import soundfile as sf

    from tests.inference.export_fixtures import make_run, perturbed_tiny
    from tests.train.train_fixtures import write_rows

    root = tmp_path_factory.mktemp("in")
    data = write_rows(root / "data", 4)
    run = make_run(perturbed_tiny(), root / "run")
    sf.write(str(root / "c.wav"), tone(0.5), SR)
    (root / "rows.jsonl").write_text(json.dumps({"id": "a", "audio": str(root / "c.wav"), "instruction": "hi"}) + "\n")
    return {"data": data, "run": run, "root": root}


def commands(inputs, out: Path) -> dict[str, list[str]]:
    recipe = inputs["root"] / f"recipe-{out.parent.name}.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "t", "output_dir": str(out / "train"),
        "model": {"encoder": "tiny:whisper", "llm": "tiny:llm",
                  "adapter": {"kind": "qformer", "num_queries": 4, "qformer_layers": 1, "qformer_heads": 4}},
        "train": {"max_steps": 2, "batch_size": 2, "save_every": 1}}))
    return {
        "data synth": ["data", "synth", "--num-clips", "2", "--out-dir", str(out / "synth"), "--quiet"],
        "data attributes": ["data", "attributes", "--input", str(inputs["data"]), "--output",
                            str(out / "attrs" / "a.jsonl"), "--quiet"],
        "train": ["train", str(recipe), "--train-file", str(inputs["data"])],
        "export": ["export", str(inputs["run"]), str(out / "export")],
        "infer": ["infer", "--model", str(inputs["run"] / "adapter"), str(inputs["root"] / "rows.jsonl"),
                  str(out / "infer" / "out.jsonl"), "--max-new-tokens", "2"],
    }


CMDS = ["data synth", "data attributes", "train", "export", "infer"]
REASONS = {"full": ("no space left",), "readonly": ("read-only file system",)}


@pytest.mark.parametrize("cmd", CMDS)
@pytest.mark.parametrize("kind", ["full", "readonly"])
def test_real_fault_is_one_error_line(kind, cmd, faulty, inputs, capsys):
    out = faulty[kind] / cmd.replace(" ", "_")
    rc = main(commands(inputs, out)[cmd])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err[-5:]
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err[-5:]
    assert any(r in err[-1].lower() for r in REASONS[kind]), err[-1]


@pytest.mark.parametrize("cmd", ["data attributes", "infer"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_simulated_fault_names_the_file(code, cmd, inputs, tmp_path, capsys, monkeypatch):
    """open() for writing under the output dir raises: the error names the file and the reason."""
    target = tmp_path / "out"
    real_open = builtins.open

    def failing_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and str(file).startswith(str(target)):
            raise OSError(code, os.strerror(code), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    rc = main(commands(inputs, target)[cmd])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: "), err[-5:]
    assert str(target) in err[-1] and os.strerror(code) in err[-1], err[-1]
