"""The whole pipeline on the real offline models with the network blocked: nothing reaches out.

A `sitecustomize.py` on PYTHONPATH installs `speech_adapter.utils.safety.install_network_guard`
in every Python process the run starts; each refused connection or DNS lookup is also logged to
a file, since a library may catch the error and carry on. HF_HUB_OFFLINE is deliberately unset,
so the proof does not rest on that flag. A very small demo recipe keeps it to a few minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXE = ROOT / ".venv" / "bin" / "speech-adapter"
SITE = r"""import os
if os.environ.get("NET_GUARD_LOG"):
    from speech_adapter.utils.safety import install_network_guard
    install_network_guard(os.environ["NET_GUARD_LOG"])
    with open(os.environ["NET_GUARD_LOG"] + ".installed", "a") as f:
        f.write(f"{os.getpid()}\n")
"""
OVERRIDES = ["data.synth.num_clips=8", "train.max_steps=3", "eval.suite.n_per_task=1", "eval.suite.tasks=[gender]",
             "distill.describe_per_clip=1", "distill.templates_per_clip=1", "distill.attempts=1",
             "distill.max_new_tokens=48", "eval.max_new_tokens=8", "eval.systems=[trained]",
             "eval.modes=[speech,text_ceiling]"]


def _guarded_env(tmp_path: Path, home: str | None) -> dict:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=f"{site}{os.pathsep}{ROOT}", NET_GUARD_LOG=str(tmp_path / "net.log"),
               HF_HOME=str(tmp_path / "hf_home"))  # an empty hub cache: nothing to fall back on
    if home:
        env["SPEECH_ADAPTER_HOME"] = home
    return env


def test_guard_blocks_and_logs(tmp_path):
    """The control: under the same sitecustomize, a real attempt is refused and logged."""
    env = _guarded_env(tmp_path, None)
    code = "import urllib.request\ntry:\n    urllib.request.urlopen('http://example.com', timeout=5)\nexcept Exception as e:\n    print(type(e).__name__)"
    p = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert "URLError" in p.stdout, p.stderr
    assert "example.com" in (tmp_path / "net.log").read_text()


@pytest.mark.slow  # the real offline models end to end, ~3-5 min on the shared CPUs
def test_pipeline_runs_with_the_network_blocked(tmp_path):
    from speech_adapter.offline_models import prepare as prep
    from speech_adapter.offline_models.sources import get_source
    from speech_adapter.paths import offline_model_dir
    from speech_adapter.recipe import load_recipe

    demo = load_recipe(ROOT / "recipes" / "demo.yaml")
    used = [get_source(ref) for ref in (demo.model.encoder, demo.model.llm)]
    ready = all(prep.is_up_to_date(offline_model_dir(s.name), prep.source_record(s), "float32") for s in used)
    home = None if ready else str(tmp_path / "home")
    env = _guarded_env(tmp_path, home)
    if not ready:  # converting the packaged models must not reach out either
        p = subprocess.run([str(EXE), "models", "prepare", *(s.short for s in used)], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
    out = tmp_path / "run"
    p = subprocess.run([str(EXE), "run", str(ROOT / "recipes" / "demo.yaml"), f"output_dir={out}", *OVERRIDES],
                       env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    log = tmp_path / "net.log"
    assert (tmp_path / "net.log.installed").read_text().strip(), "the guard was never installed"
    assert not log.exists() or not log.read_text().strip(), f"network attempts: {log.read_text()}"
    exported = list(out.rglob("adapter_config.json"))
    assert exported, "no adapter was written"
    reports = list(out.rglob("report.json"))
    assert reports and json.loads(reports[0].read_text())
