"""Slow: the real offline default backbone as the text ceiling through the runner (needs `models prepare`)."""

import pytest

from speech_adapter.eval.runner import evaluate
from speech_adapter.eval.systems import speechlm_generate_fn

pytestmark = pytest.mark.slow

ROWS = [{"id": "r1", "task": "gender", "split": "seen", "kind": "constrained", "audio": None,
         "description": "[00:00-00:02] Hello there. (Gender: Female, Pitch: High, Speaking speed: Normal)",
         "instruction": 'Is the speaker male or female? Answer with one of: female, male. Answer in JSON with the '
                        'key "answer", and nothing else.', "options": ["female", "male"], "label": "female",
         "metric": "option", "constraints": [{"id": "json", "kwargs": {"keys": ["answer"]}}]},
        {"id": "r2", "task": "transcription", "split": "unseen", "kind": "plain", "audio": None,
         "description": "[00:00-00:02] Hello there. (Gender: Male)", "instruction": "Transcribe the audio.",
         "options": None, "label": "Hello there.", "metric": "wer", "constraints": []}]


def test_backbone_text_ceiling_runs_and_is_deterministic(tmp_path):
    from speech_adapter.models.config import ModelConfig
    from speech_adapter.models.speechlm import SpeechLM

    try:
        lm = SpeechLM.build(ModelConfig())
    except Exception as e:  # noqa: BLE001 - the offline models are a setup step, named in the failure
        pytest.fail(f"offline models not usable; run `speech-adapter models prepare` ({e})")
    gen = speechlm_generate_fn(lm.eval(), max_new_tokens=24, batch_size=2)
    a = evaluate(ROWS, {"text_ceiling": gen}, system="backbone", out_dir=tmp_path / "a", progress=False)
    b = evaluate(ROWS, {"text_ceiling": gen}, system="backbone", out_dir=tmp_path / "b", progress=False)
    assert a["modes"] == b["modes"]  # greedy decoding, batched the same way
    outs = (tmp_path / "a" / "generations.jsonl").read_text()
    assert outs.count('"mode": "text_ceiling"') == 2
    ceil = a["modes"]["text_ceiling"]
    assert ceil["n"] == 2 and set(ceil["constraints"]) == {"json"}
    assert ceil["tasks"]["transcription"]["unseen"] is not None
