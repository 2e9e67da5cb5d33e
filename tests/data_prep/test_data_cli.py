"""`speech-adapter data ...`: help, an end-to-end run on a few clips, one-line errors."""

import json

import pytest

from speech_adapter.cli import main


@pytest.mark.parametrize("sub", ["synth", "import", "attributes", "describe"])
def test_help_lists_every_setting(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out
    assert ("--num-shards" if sub == "synth" else "--strict") in out


def test_data_help_names_all_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    for sub in ("synth", "import", "attributes", "describe", "distill"):
        assert sub in out


def test_synth_attributes_describe_end_to_end(tmp_path, capsys):
    d = tmp_path / "corpus"
    assert main(["data", "synth", "--out-dir", str(d), "--num-clips", "3", "--seed", "5", "--quiet",
                 "--p-noise", "0", "--p-multi-speaker", "0", "--rate-min", "200"]) == 0
    assert main(["data", "attributes", "--input", str(d / "corpus.jsonl"), "--output", str(d / "attrs.jsonl"),
                 "--agreement", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 rows" in out and "spearman" in out
    assert main(["data", "describe", "--input", str(d / "attrs.jsonl"), "--output", str(d / "desc.jsonl"),
                 "--fields", "gender,accent,duration", "--quiet", "--show", "1"]) == 0
    rows = [json.loads(x) for x in (d / "desc.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["attributes"]["duration_s"] == pytest.approx(r["duration"]) for r in rows)
    r = rows[0]
    assert r["description"].endswith(f"(Gender: {r['meta']['gender'].capitalize()}, "
                                     f"Accent: {r['meta']['accent']}, Duration: {round(r['duration'])}s)") \
        or r["meta"]["accent"] is None


def test_config_errors_print_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "synth", "--out-dir", str(tmp_path), "--rate-min", "500"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: rate_min: 500 is above rate_max") and "\n" not in err
    (tmp_path / "in.jsonl").write_text('{"id": "a", "audio": "nope.wav"}\n')
    assert main(["data", "attributes", "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "o.jsonl"), "--strict", "--quiet"]) == 2
    assert "nope.wav: file not found" in capsys.readouterr().err
    assert main(["data", "describe", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "d.jsonl"),
                 "--fields", "gender,colour"]) == 2
    assert "colour" in capsys.readouterr().err
