"""`eval run` end to end on a tiny random-weight SpeechLM saved as an adapter dir (no files from a hub)."""

import json

import numpy as np
import soundfile as sf

from speech_adapter.cli import main
from speech_adapter.utils.io import read_jsonl


def test_eval_run_on_tiny_speechlm_writes_report_and_resumes(tmp_path, capsys):
    from speech_adapter.models.tiny import tiny_speechlm

    tiny_speechlm(lora=True).save_adapter(tmp_path / "model")
    rows = []
    for i in range(3):
        sf.write(tmp_path / f"c{i}.wav", (0.1 * np.sin(np.arange(8000) * (i + 1) / 7)).astype(np.float32), 16000)
        rows.append({"id": f"c{i}", "audio": f"c{i}.wav", "transcript": "hello there friend", "language": "en",
                     "duration": 0.5, "description": "Gender: Female, Pitch: High",
                     "meta": {"gender": "female", "speakers": 1}})
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite, out = tmp_path / "suite.jsonl", tmp_path / "run"
    assert main(["eval", "build", "--corpus", str(tmp_path / "heldout.jsonl"), "--out", str(suite),
                 "--n-per-task", "1", "--tasks", "gender", "--constrained-fraction", "1"]) == 0
    args = ["eval", "run", "--suite", str(suite), "--model", str(tmp_path / "model"), "--out", str(out),
            "--max-new-tokens", "4", "--batch-size", "2", "--system", "tiny"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["modes"]) == {"speech", "text_ceiling", "text_retention", "cascade"}
    assert report["modes"]["speech"]["n"] == 2 and report["modes"]["speech"]["constraints"]
    assert (out / "tasks.png").exists() and (out / "if_rates.png").exists()
    assert "IF rate" in capsys.readouterr().out
    n_gen = len(read_jsonl(out / "generations.jsonl"))
    assert n_gen == 8
    gens = read_jsonl(out / "generations.jsonl")
    assert all(g["stop"] in ("eos", "length") for g in gens)  # why each reply ended is recorded
    assert all(g["asr"] is not None for g in gens if g["mode"] == "cascade")
    md = (out / "report.md").read_text()
    assert md.index("## Scorecard") < md.index("## Details") and "raw replies" in md
    assert json.loads((out / "scorecard.json").read_text())["columns"]["cascade"]["n"] == 2
    assert main(args) == 0  # a rerun reads the cache: nothing is generated twice
    assert len(read_jsonl(out / "generations.jsonl")) == n_gen
