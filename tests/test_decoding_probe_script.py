"""scripts/decoding_probe.py: one block per penalty, with its degenerate count, and a line per row."""

import json

from tests.inference.export_fixtures import perturbed_tiny, write_wav
from tests.scripts_import import load_script


def test_one_block_per_penalty_and_a_line_per_row(tmp_path, capsys):
    mod = load_script("decoding_probe")
    perturbed_tiny().save_adapter(tmp_path / "adapter")
    wav = write_wav(tmp_path / "a.wav")
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps({"id": f"r{i}", "task": "describe", "audio": str(wav),
                                         "instruction": q}) + "\n" for i, q in enumerate(["Describe it.", "Who speaks?"])))
    assert mod.main([str(tmp_path / "adapter"), str(suite), "1.0", "1.5", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    heads = [ln for ln in out.splitlines() if ln.startswith("=== ")]
    assert [h.split(":")[0] for h in heads] == ["=== repetition penalty 1.0", "=== repetition penalty 1.5"]
    assert all(h.endswith("/2") for h in heads)
    assert sum(ln.startswith("describe | ") for ln in out.splitlines()) == 4
