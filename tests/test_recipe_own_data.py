"""recipes/own_data.yaml and the README's "Train on your own data" walkthrough, end to end.

The test takes the README's 10-row `labels.csv` as written there, makes its 10 clips (harmonic
tones at a female or male pitch, written with soundfile), runs the README's command through the
CLI with tiny random models and a scripted teacher swapped in, and loads the export the way the
README does. A `datasets` dir saved to disk goes through the same import.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speech_adapter.cli import main as cli_main
from speech_adapter.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "own_data.yaml"
SR = 16000
F0 = {"f": 210.0, "m": 115.0}  # typical female / male speaking pitch, Hz
TINY = ["model.encoder=tiny:whisper", "model.llm=tiny:llm", "train.max_steps=2", "train.batch_size=2",
        "distill.templates_per_clip=1", "distill.attempts=1", "distill.open_min_grounding=0.0",
        "eval.suite.n_per_task=1", "eval.suite.tasks=[gender,describe]", "eval.max_new_tokens=4",
        "eval.modes=[speech,text_ceiling]"]
SCRIPT = {"rules": [], "default": "Someone speaks."}


def readme_labels() -> str:
    """The `labels.csv` block of the README's own-data section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Train on your own data"):]
    return re.search(r"```csv\n(.*?)```", section, re.S).group(1)


def tone(f0: float, seconds: float, seed: int) -> np.ndarray:
    """A voiced-speech stand-in: f0 with 4 harmonics, a syllable-rate envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3.5 * t) ** 2
    return (0.2 * envelope * wave + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def make_clips(folder: Path) -> list[dict]:
    """my_clips/labels.csv from the README and one clip per row; returns the rows."""
    folder.mkdir(parents=True)
    (folder / "labels.csv").write_text(readme_labels())
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    for i, row in enumerate(rows):
        sf.write(folder / row["file"], tone(F0[row["gender"]], 1.2 + 0.1 * i, seed=i), SR)
    return rows


def test_readme_example_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the README runs the command beside my_clips/
    rows = make_clips(tmp_path / "my_clips")
    assert len(rows) == 10
    (tmp_path / "teacher.json").write_text(json.dumps(SCRIPT))
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"speech-adapter run (recipes/own_data\.yaml [^\n`]*)", readme).group(1).split()
    args = [str(RECIPE), *command[1:], *TINY, f"distill.model=fake:{tmp_path / 'teacher.json'}"]
    assert cli_main(["run", *args]) == 0, capsys.readouterr().err

    run = tmp_path / "runs" / "own_data"
    corpus = [json.loads(x) for x in (run / "data" / "corpus.jsonl").read_text().splitlines()]
    assert len(corpus) == 10 and not (run / "data" / "rejects.jsonl").exists()
    described = {r["id"]: r for r in map(json.loads, (run / "data" / "described.jsonl").read_text().splitlines())}
    clip03 = next(r for r in described.values() if r["meta"]["source_audio"] == "clip03.wav")
    # labels from the file as they are, pitch measured from the audio, the transcript kept
    assert "Gender: Female" in clip03["description"] and "Emotion: Happy" in clip03["description"]
    assert "Pitch:" in clip03["description"] and "I can't believe we won the match!" in clip03["description"]
    assert "Accent" not in clip03["description"]  # a column the file does not have is skipped
    distilled = [json.loads(x) for x in (run / "distill" / "distilled.jsonl").read_text().splitlines()]
    assert distilled and {r["task"] for r in distilled} >= {"describe"}
    assert all(r["teacher"]["model"] == "fake" and r["response"] for r in distilled)
    assert (run / "eval" / "compare" / "compare.md").exists()

    from speech_adapter.models.speechlm import SpeechLM

    model = SpeechLM.from_pretrained(run / "export")  # README step 4
    answer = model.ask(str(tmp_path / "my_clips" / "clip03.wav"), "What can you hear?", max_new_tokens=3)
    assert isinstance(answer, str)


@pytest.mark.parametrize("override, check", [
    ("model.lora.rank=8", lambda r: r.model.lora is not None and r.model.lora.rank == 8),
    ("data.import.text_column=null", lambda r: r.import_config().text_column is None),
    ("data.import.preset=vctk", lambda r: r.import_config().preset == "vctk"),
])
def test_readme_variations_are_one_override(override, check):
    recipe = load_recipe(RECIPE, [override])
    assert check(recipe)


def test_a_saved_datasets_dir_imports_with_its_labels(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = make_clips(tmp_path / "my_clips")
    ds = datasets.Dataset.from_dict({
        "audio": [str(tmp_path / "my_clips" / r["file"]) for r in rows],
        "transcript": [r["transcript"] for r in rows], "gender": [r["gender"] for r in rows],
        "emotion": [r["emotion"] for r in rows]}).cast_column("audio", datasets.Audio(sampling_rate=SR))
    ds.save_to_disk(str(tmp_path / "my_dataset"))
    recipe = load_recipe(RECIPE, [f"data.import.source={tmp_path / 'my_dataset'}", "data.import.audio_column=audio",
                                  f"output_dir={tmp_path / 'run'}"])
    from speech_adapter.pipeline import run_pipeline

    result = run_pipeline(recipe, until="data")["data"]
    assert result["written"] == 10, result
    corpus = [json.loads(x) for x in (tmp_path / "run" / "data" / "corpus.jsonl").read_text().splitlines()]
    assert [r["meta"]["gender"] for r in corpus] == ["female" if r["gender"] == "f" else "male" for r in rows]
    assert corpus[2]["meta"]["emotion"] == "happy" and corpus[2]["transcript"] == rows[2]["transcript"]
