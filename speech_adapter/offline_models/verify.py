"""Prove a conversion right against the source's own runtime, before it is put in place.

- LLM: the converted safetensors dir and the GGUF file (loaded and dequantized by transformers)
  give the same logits on a chat prompt (fp32: bit-identical up to `LLM_LOGIT_TOL`).
- Whisper: the converted encoder's output matches CTranslate2's `encode` on the original
  `model.bin` within `ENCODER_TOL` (CTranslate2 computes in its own kernels, from fp16 weights),
  and both give the same greedy transcript tokens on two real recordings shipped with the package
  (CMU ARCTIC, `resources/real/`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speech_adapter.audio import load_audio
from speech_adapter.errors import SpeechAdapterError
from speech_adapter.models.encoder import transcribe

LLM_PROMPT = "Reply in JSON with keys \"gender\" and \"pitch\": a high female voice says hello."
LLM_LOGIT_TOL = 1e-3  # float32 on both sides: differences are summation order at most
ENCODER_TOL = 1e-3  # max |diff| / max |output|; measured 2.1e-5 for whisper-base
SPEECH_CLIPS = tuple(Path(__file__).resolve().parents[1] / "resources" / "real" / "audio" / name
                     for name in ("arctic-aew-a0001.flac", "arctic-aew-a0002.flac"))


class VerificationError(SpeechAdapterError):
    """A converted model that does not behave like its source."""


def verify_llm(gguf_path, out_dir) -> dict:
    """Logits of `out_dir` vs the GGUF at `gguf_path` on one chat prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    tok = AutoTokenizer.from_pretrained(out_dir)
    inputs = tok.apply_chat_template([{"role": "user", "content": LLM_PROMPT}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    logits = []
    for load in (lambda: AutoModelForCausalLM.from_pretrained(out_dir),
                 lambda: AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                              dtype=torch.float32)):
        model = load().eval()
        with torch.no_grad():
            logits.append(model(**inputs).logits[0].float())
        del model
    diff = (logits[0] - logits[1]).abs().max().item()
    agree = (logits[0].argmax(-1) == logits[1].argmax(-1)).float().mean().item()
    result = {"prompt_tokens": int(inputs["input_ids"].shape[1]), "max_abs_logit_diff": diff,
              "argmax_agreement": agree, "tolerance": LLM_LOGIT_TOL}
    if not diff <= LLM_LOGIT_TOL * max(1.0, logits[1].abs().max().item()):
        raise VerificationError(f"{out_dir.name}: converted logits differ from the GGUF's by {diff:.3g} "
                                f"(argmax agreement {agree:.1%}); the conversion is wrong")
    return result


def _speech() -> list[np.ndarray]:
    return [load_audio(p) for p in SPEECH_CLIPS]


def verify_whisper(ct2_dir, out_dir) -> dict:
    """Encoder output and greedy transcripts of `out_dir` vs CTranslate2 on `ct2_dir`.

    Returns {"skipped": why} when ctranslate2 is not installed (it is the reference runtime).
    """
    try:
        import ctranslate2
    except ImportError:
        return {"skipped": "ctranslate2 is not installed"}
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    out_dir = Path(out_dir)
    fe, tok = WhisperFeatureExtractor.from_pretrained(out_dir), WhisperTokenizer.from_pretrained(out_dir)
    model = WhisperForConditionalGeneration.from_pretrained(out_dir).eval()
    speech = _speech()
    feats = fe(speech, sampling_rate=16000, return_tensors="pt").input_features  # [B, n_mels, 3000]
    ct = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", intra_threads=torch.get_num_threads())
    storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.numpy()))
    with torch.no_grad():
        hf_enc = model.model.encoder(feats).last_hidden_state.numpy()
    ct_enc = np.array(ct.encode(storage, to_cpu=True))
    enc_diff = float(np.abs(hf_enc - ct_enc).max()) / float(np.abs(ct_enc).max())
    # Both sides plain greedy (no suppression lists), the way `transcribe` decodes.
    hf_texts = transcribe(model, fe, tok, speech, max_new_tokens=48)
    multilingual = model.config.vocab_size >= 51865
    names = ["<|startoftranscript|>"] + (["<|en|>", "<|transcribe|>"] if multilingual else []) + ["<|notimestamps|>"]
    prompt = tok.convert_tokens_to_ids(names)
    ct_res = ct.generate(storage, [prompt] * len(speech), beam_size=1, max_length=48 + len(prompt),
                         suppress_blank=False, suppress_tokens=[])
    ct_texts = [tok.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in ct_res]
    result = {"encoder_max_rel_diff": enc_diff, "tolerance": ENCODER_TOL, "transcripts": hf_texts,
              "same_transcripts_as_ctranslate2": hf_texts == ct_texts}
    if enc_diff > ENCODER_TOL:
        raise VerificationError(f"{out_dir.name}: encoder output differs from CTranslate2's by {enc_diff:.3g} "
                                f"of its scale (tolerance {ENCODER_TOL}); the conversion is wrong")
    if hf_texts != ct_texts:
        raise VerificationError(f"{out_dir.name}: greedy transcripts differ from CTranslate2's: "
                                f"{hf_texts} vs {ct_texts}")
    return result
