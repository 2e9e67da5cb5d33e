"""Tests of speech_adapter.offline_models.whisper_ct2: the model.bin parser and the CT2 -> HF mapping.

The model.bin writer and the HF -> CT2 mapping below are written independently of the module
under test, following CTranslate2's own serializer and WhisperLoader (fused q,k,v with a zero k
bias), so a round trip through them checks the converter against the format, not against itself.
"""

import json
import struct

import numpy as np
import pytest
import torch

from speech_adapter.errors import ModelNotFoundError
from speech_adapter.offline_models.whisper_ct2 import (
    CT2FormatError,
    convert_whisper_ct2,
    ct2_whisper_state_dict,
    read_ct2_model,
)

DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
               np.dtype(np.int32): 3, np.dtype(np.float16): 4}
BF16 = "bf16"  # marker: write these float32 values as bfloat16 (code 5)

# tiny Whisper: byte-level vocab (256) + 4 specials + 4 timestamp tokens
TINY = dict(d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
            max_source_positions=12, max_target_positions=10)
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|startofprev|>", "<|notimestamps|>"]
VOCAB = 256 + len(SPECIALS) + 4


def _str(name: str) -> bytes:
    raw = name.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(path, variables: dict, aliases: dict | None = None, version=6, spec="WhisperSpec"):
    """CTranslate2's serializer layout; values are numpy arrays or (BF16, float32 array)."""
    out = [struct.pack("<I", version), _str(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        if isinstance(value, tuple) and value[0] == BF16:
            arr = np.asarray(value[1], np.float32)
            raw, code = (arr.view(np.uint32) >> 16).astype(np.uint16).tobytes(), 5
        else:
            arr = np.asarray(value)
            raw, code = arr.tobytes(), DTYPE_CODES[arr.dtype]
        out += [_str(name), struct.pack("<B", arr.ndim), *(struct.pack("<I", d) for d in arr.shape),
                struct.pack("<B", code), struct.pack("<I", len(raw)), raw]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for a, t in aliases.items():
        out += [_str(a), _str(t)]
    path.write_bytes(b"".join(out))


# ----------------------------------------------------------------------------- parser


def test_parser_reads_every_dtype_scalars_and_aliases(tmp_path):
    bf = np.array([1.5, -2.0, 0.15625], np.float32)  # exactly representable in bf16
    variables = {
        "a/f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "a/i8": np.array([-128, 0, 127], np.int8),
        "a/i16": np.array([[-3], [30000]], np.int16),
        "a/i32": np.array([2**31 - 1, -5], np.int32),
        "a/f16": np.array([0.5, -1.25, 65504.0], np.float16),
        "a/bf16": (BF16, bf),
        "a/scalar": np.array(6, np.int16),
    }
    write_model_bin(tmp_path / "model.bin", variables, aliases={"b/alias": "a/f32"})
    m = read_ct2_model(tmp_path / "model.bin")
    assert (m.version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    for name, value in variables.items():
        if name == "a/bf16":
            np.testing.assert_array_equal(m.variables[name], bf)
            assert m.variables[name].dtype == np.float32
        else:
            assert m.variables[name].dtype == value.dtype
            np.testing.assert_array_equal(m.variables[name], value)
    assert m.variables["a/scalar"].shape == ()
    assert m.aliases == {"b/alias": "a/f32"}
    np.testing.assert_array_equal(m.get("b/alias"), variables["a/f32"])


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:-7], "truncated"),
    (lambda b: struct.pack("<I", 99) + b[4:], "version 99"),
    (lambda b: b + b"xx", "trailing"),
])
def test_parser_rejects_damaged_files_naming_them(tmp_path, damage, match):
    path = tmp_path / "model.bin"
    write_model_bin(path, {"x": np.ones(4, np.float32)}, aliases={"y": "x"})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CT2FormatError, match=match) as e:
        read_ct2_model(path)
    assert str(path) in str(e.value)


def test_parser_rejects_unknown_dtype_and_missing_file(tmp_path):
    path = tmp_path / "model.bin"
    write_model_bin(path, {"x": np.ones(2, np.float32)})
    data = bytearray(path.read_bytes())
    data[data.index(b"x\0") + 2 + 1 + 4] = 9  # the dtype byte after name, ndim, one dim
    path.write_bytes(bytes(data))
    with pytest.raises(CT2FormatError, match="unknown dtype code 9"):
        read_ct2_model(path)
    with pytest.raises(ModelNotFoundError):
        read_ct2_model(tmp_path / "absent.bin")


# ----------------------------------------------------------------------------- mapping


def _tiny_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=VOCAB, decoder_start_token_id=257, eos_token_id=256,
                        pad_token_id=256, bos_token_id=257, **TINY)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random LayerNorm/bias values so a swapped gamma/beta would show
        for name, p in model.named_parameters():
            if "k_proj.bias" not in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_to_ct2(model, dtype=np.float16) -> dict:
    """HF Whisper -> CTranslate2 variables, as ctranslate2's WhisperLoader writes them."""
    sd = {k: v.detach().numpy().astype(dtype) for k, v in model.state_dict().items()}
    out = {"decoder/activation": np.array(3, np.int8), "decoder/num_heads": np.array(2, np.int16),
           "encoder/num_heads": np.array(2, np.int16), "decoder/pre_norm": np.array(1, np.int8)}

    def lin(dst, src, bias=True):
        out[f"{dst}/weight"] = sd[f"{src}.weight"]
        if bias:
            out[f"{dst}/bias"] = sd[f"{src}.bias"]

    def norm(dst, src):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(dst, src, names):
        out[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{n}.weight"] for n in names])
        out[f"{dst}/bias"] = np.concatenate([sd.get(f"{src}.{n}.bias", np.zeros(TINY["d_model"], dtype))
                                             for n in names])

    for i in (1, 2):
        lin(f"encoder/conv{i}", f"model.encoder.conv{i}")
    for side in ("encoder", "decoder"):
        out[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"]
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(TINY[f"{side}_layers"]):
            c, h = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            fused(f"{c}/self_attention/linear_0", f"{h}.self_attn", ["q_proj", "k_proj", "v_proj"])
            lin(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
            norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
            if side == "decoder":
                lin(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
                fused(f"{c}/attention/linear_1", f"{h}.encoder_attn", ["k_proj", "v_proj"])
                lin(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
                norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
            lin(f"{c}/ffn/linear_0", f"{h}.fc1")
            lin(f"{c}/ffn/linear_1", f"{h}.fc2")
            norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    return out


def _tokenizer_json() -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return json.loads(tok.to_str())


def _write_ct2_dir(tmp_path, model):
    src = tmp_path / "ct2"
    src.mkdir()
    write_model_bin(src / "model.bin", hf_to_ct2(model),
                    aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    (src / "config.json").write_text(json.dumps(
        {"suppress_ids": [257], "suppress_ids_begin": [220, 256], "alignment_heads": [[1, 0]], "lang_ids": []}))
    (src / "tokenizer.json").write_text(json.dumps(_tokenizer_json()))
    return src


def test_converted_tiny_whisper_matches_the_original(tmp_path):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    model = _tiny_whisper()
    with torch.no_grad():  # the source is fp16: compare against the fp16-rounded original
        for p in model.parameters():
            p.copy_(p.half().float())
    src = _write_ct2_dir(tmp_path, model)
    dims = convert_whisper_ct2(src, tmp_path / "hf")
    assert {k: dims[k] for k in TINY} == TINY and dims["vocab_size"] == VOCAB and dims["tie_word_embeddings"]

    conv = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    ref_sd, new_sd = model.state_dict(), conv.state_dict()
    assert set(ref_sd) == set(new_sd)
    for k in ref_sd:
        torch.testing.assert_close(new_sd[k], ref_sd[k], rtol=0, atol=0, msg=k)
    feats = torch.randn(1, TINY["num_mel_bins"], 2 * TINY["max_source_positions"])
    dec = torch.tensor([[257, 259, 5, 9]])
    with torch.no_grad():
        torch.testing.assert_close(conv(feats, decoder_input_ids=dec).logits,
                                   model(feats, decoder_input_ids=dec).logits)

    tok = WhisperTokenizer.from_pretrained(tmp_path / "hf")
    assert len(tok) == VOCAB
    assert tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>", "<|0.00|>", "<|0.06|>"]) == \
        [257, 259, 260, 263]
    ids = tok("hi there", add_special_tokens=False).input_ids
    assert tok.decode(ids) == "hi there"
    assert WhisperFeatureExtractor.from_pretrained(tmp_path / "hf").feature_size == TINY["num_mel_bins"]
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert gen["no_timestamps_token_id"] == 259 and gen["decoder_start_token_id"] == 257


def test_mapping_refuses_unknown_variables_and_k_bias(tmp_path):
    from speech_adapter.offline_models.whisper_ct2 import CT2Model

    variables = hf_to_ct2(_tiny_whisper(), dtype=np.float32)
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    sd, dims = ct2_whisper_state_dict(CT2Model(6, "WhisperSpec", 3, dict(variables), aliases))
    assert "proj_out.weight" not in sd and dims["tie_word_embeddings"]

    extra = dict(variables, **{"encoder/layer_0/mystery/weight": np.zeros(2, np.float32)})
    with pytest.raises(CT2FormatError, match="unmapped.*mystery"):
        ct2_whisper_state_dict(CT2Model(6, "WhisperSpec", 3, extra, aliases))

    bad = dict(variables)
    b = bad["encoder/layer_0/self_attention/linear_0/bias"].copy()
    b[TINY["d_model"]] = 1.0  # first element of the k slice
    bad["encoder/layer_0/self_attention/linear_0/bias"] = b
    with pytest.raises(CT2FormatError, match="nonzero bias"):
        ct2_whisper_state_dict(CT2Model(6, "WhisperSpec", 3, bad, aliases))

    missing = {k: v for k, v in variables.items() if k != "decoder/layer_1/ffn/linear_1/weight"}
    with pytest.raises(CT2FormatError, match="decoder/layer_1/ffn/linear_1/weight"):
        ct2_whisper_state_dict(CT2Model(6, "WhisperSpec", 3, missing, aliases))
    with pytest.raises(CT2FormatError, match="WhisperSpec"):
        ct2_whisper_state_dict(CT2Model(6, "TransformerSpec", 3, dict(variables), aliases))


def test_int8_weights_are_dequantized_by_their_row_scale():
    from speech_adapter.offline_models.whisper_ct2 import CT2Model

    variables = hf_to_ct2(_tiny_whisper(), dtype=np.float32)
    name = "encoder/layer_0/ffn/linear_0"
    w = variables[f"{name}/weight"]  # [32, 16]
    scale = 127.0 / np.abs(w).max(axis=1)  # CTranslate2's int8 scheme: q = round(w * scale[row])
    variables[f"{name}/weight"] = np.round(w * scale[:, None]).astype(np.int8)
    variables[f"{name}/weight_scale"] = scale.astype(np.float32)
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    sd, _ = ct2_whisper_state_dict(CT2Model(6, "WhisperSpec", 3, variables, aliases))
    got = sd["model.encoder.layers.0.fc1.weight"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, w, atol=float(np.abs(w).max() / 127))
    assert not np.allclose(got, variables[f"{name}/weight"])  # not the raw int8 values
