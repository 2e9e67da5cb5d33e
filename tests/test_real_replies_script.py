"""scripts/real_replies.py: every (clip, instruction) pair gets a table row with the model's reply."""

from tests.inference.export_fixtures import perturbed_tiny
from tests.scripts_import import load_script


def _module():
    return load_script("real_replies")


def test_writes_one_row_per_clip_and_instruction(tmp_path):
    mod = _module()
    model = perturbed_tiny()
    model.save_adapter(tmp_path / "adapter")
    out = tmp_path / "replies.md"
    assert mod.main([str(tmp_path / "adapter"), "--out", str(out), "--max-new-tokens", "3"]) == 0
    text = out.read_text()
    for cid in mod.CLIPS:
        assert f"**{cid}**" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| instruction")]
    assert len(rows) == len(mod.CLIPS) * len(mod.INSTRUCTIONS)
    assert all(ln.count(" | ") == 1 for ln in rows)  # replies' pipes are escaped: two cells a row


def test_cell_escapes_markdown():
    mod = _module()
    assert mod._cell("a | b\nc <x>") == "a \\| b<br>c &lt;x&gt;"
