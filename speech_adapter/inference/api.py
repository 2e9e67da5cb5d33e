"""Python API: load an export with checks, ask about a clip, multi-turn conversations, streaming.

Loading follows peft's one convention (`SpeechLM.from_pretrained(dir)` calls `load` here): the
export's adapter_config.json names the base models; they are resolved locally (offline refs,
local dirs, hub ids already in the hub cache; never downloaded) and compared with the recorded
checksums, hidden size, vocab size and tokenizer (chat template, single-token placeholder).
A checksum or vocab-size mismatch is refused unless `ignore_mismatch=True`; a different hidden
size or encoder width, a tokenizer without a chat template or one that splits the placeholder
cannot be ignored: the weights would not fit, or no prompt could be built.

Long-audio policy (Whisper sees at most 30 s): a clip longer than 30 s is cut with
`audio.chunk_audio` into consecutive pieces of <= 30 s; each piece gets its own placeholder,
in order, in the same user turn (so the LLM reads the pieces' audio tokens back to back). A
trailing piece shorter than 0.1 s is dropped. Several clips in one turn or across turns work the
same way: every placeholder in the conversation maps to the next piece in order.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from speech_adapter.audio import MIN_SECONDS, SAMPLE_RATE, chunk_audio, load_audio
from speech_adapter.errors import ConfigError, ModelNotFoundError

USE_DEFAULT = object()  # system prompt sentinel: the one recorded in the export


# ---- loading ------------------------------------------------------------------------------------

def _inside(root: Path, rel: str, what: str) -> Path:
    """root/rel, refusing anything that resolves outside root (absolute, '..', symlinks)."""
    p = (root / rel)
    if Path(rel).is_absolute() or not p.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"{root / 'adapter_config.json'}: files.{what} = {rel!r} points outside the "
                          "export dir; refusing to load files from elsewhere")
    return p


def _tokenizer_problems(ref: str, placeholder: str, trust_remote_code: bool) -> list[str]:
    """Chat template and placeholder checks on the LLM tokenizer, before any weights load."""
    if ref.startswith("tiny:"):
        from speech_adapter.models.tiny import tiny_llm_tokenizer

        tok = tiny_llm_tokenizer()
    else:
        from transformers import AutoTokenizer

        from speech_adapter.paths import resolve_model

        tok = AutoTokenizer.from_pretrained(resolve_model(ref), trust_remote_code=trust_remote_code)
    problems = []
    if not getattr(tok, "chat_template", None):
        problems.append(f"llm {ref}: its tokenizer has no chat template (the adapter was trained inside one)")
    if placeholder not in tok.get_vocab():
        tok.add_tokens([placeholder], special_tokens=True)
    if len(tok(placeholder, add_special_tokens=False).input_ids) != 1:
        problems.append(f"llm {ref}: the placeholder {placeholder} does not encode to a single token")
    return problems


def _llm_hidden_size(ref: str, trust_remote_code: bool) -> int | None:
    """The LLM's hidden size from its config.json (None when it cannot be read cheaply)."""
    if ref.startswith("tiny:"):
        return None  # the tiny pair is fixed; the post-build check covers it
    from transformers import AutoConfig

    from speech_adapter.paths import resolve_model

    cfg = AutoConfig.from_pretrained(resolve_model(ref), trust_remote_code=trust_remote_code)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return getattr(cfg, "hidden_size", None)


def load(directory, *, ignore_mismatch: bool = False, trust_remote_code: bool = False,
         encoder: str | None = None, llm: str | None = None, dtype: str | None = None):
    """A SpeechLM from an export dir (or a save_adapter / training run dir), checked.

    encoder / llm: other refs for the base models (e.g. a local copy on another machine);
    dtype: override the recorded dtype. Raises ConfigError on a mismatch (listing all of them)
    unless ignore_mismatch, ModelNotFoundError when a base model is not on this machine.
    """
    from speech_adapter.config import to_dict
    from speech_adapter.export import (ADAPTER_CONFIG, EXPORT_WEIGHTS, LORA_DIR, TRAIN_WEIGHTS,
                                       base_model_record, compare_records, find_source)
    from speech_adapter.models.speechlm import SpeechLM, read_adapter_config

    d = Path(directory)
    if not (d / ADAPTER_CONFIG).exists():
        d = find_source(d, "auto")
    raw = json.loads((d / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    files = raw.get("files") or {}
    for key, rel in files.items():
        _inside(d, str(rel), key)
    weights = _inside(d, files.get("weights") or (EXPORT_WEIGHTS if (d / EXPORT_WEIGHTS).exists()
                                                   else TRAIN_WEIGHTS), "weights")
    lora_dir = _inside(d, files.get("lora", LORA_DIR), "lora")
    if not weights.is_file():
        from speech_adapter.utils.safety import refuse_pickles

        refuse_pickles(d, "adapter weights")
        raise ModelNotFoundError(f"{weights}: adapter weights missing from {d}")
    config = read_adapter_config(d)
    changes = {"trust_remote_code": bool(trust_remote_code)}  # never taken from the file
    if encoder:
        changes["encoder"] = encoder
    if llm:
        changes["llm"] = llm
    if dtype:
        changes["dtype"] = dtype
    config = dataclasses.replace(config, **changes)
    config.validate()

    fatal = _tokenizer_problems(config.llm, config.placeholder, config.trust_remote_code)
    want_h, have_h = raw.get("llm_hidden_size"), _llm_hidden_size(config.llm, config.trust_remote_code)
    if want_h is not None and have_h is not None and want_h != have_h:
        fatal.append(f"llm_hidden_size {want_h} recorded, but {config.llm} has {have_h}; "
                     "the adapter's weights cannot fit")
    if fatal:
        raise ConfigError(f"{d}: cannot use these base models (not ignorable): " + "; ".join(fatal))
    problems = []
    for role, ref in (("encoder", config.encoder), ("llm", config.llm)):
        saved = (raw.get("base_models") or {}).get(role)
        if saved and saved.get("weights"):
            hash_base = "auto" if ref.startswith("offline:") else "always"
            problems += compare_records(saved, base_model_record(ref, hash_base), role)
    if problems and not ignore_mismatch:
        raise ConfigError(f"{d}: the base models differ from the ones this adapter was trained with: "
                          + "; ".join(problems) + "; pass ignore_mismatch=True (CLI: --ignore-mismatch) "
                          "to load anyway")

    model = SpeechLM.build(config)
    shapes = [("llm_hidden_size", model.causal_lm.get_input_embeddings().weight.shape[1]),
              ("encoder_dim", model.encoder.dim)]
    for key, have in shapes:
        want = raw.get(key)
        if want is not None and want != have:
            raise ConfigError(f"{d / ADAPTER_CONFIG}: {key} {want} recorded, but the base model has {have}; "
                              "the adapter's weights cannot fit (not ignorable)")
    vocab = raw.get("llm_vocab_size")
    have_vocab = model.causal_lm.get_input_embeddings().num_embeddings
    if vocab is not None and vocab != have_vocab and not ignore_mismatch:
        raise ConfigError(f"{d / ADAPTER_CONFIG}: llm_vocab_size {vocab} recorded, the LLM has {have_vocab}; "
                          "pass ignore_mismatch=True to load anyway")
    saved_adapter = read_adapter_config(d).adapter
    if to_dict(saved_adapter) != to_dict(model.config.adapter):
        raise ConfigError(f"{d / ADAPTER_CONFIG}: adapter config differs from the model's")
    _load_weights(model, weights, lora_dir)
    model.eval()
    return model


def _load_weights(model, weights: Path, lora_dir: Path) -> None:
    from speech_adapter.utils.safety import load_safetensors

    state = load_safetensors(weights, device=str(model.device))
    missing, unexpected = model.adapter.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{weights}: tensors do not fit the adapter (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    has_lora = lora_dir.is_dir()
    if (model.config.lora is None) == has_lora:
        raise ConfigError(f"{lora_dir.parent}: LoRA {'present' if has_lora else 'absent'} but lora is "
                          f"{'null' if model.config.lora is None else 'set'} in the config")
    if has_lora:
        from peft import set_peft_model_state_dict

        f = lora_dir / "adapter_model.safetensors"
        if not f.resolve().is_relative_to(lora_dir.parent.resolve()):
            raise ConfigError(f"{f}: resolves outside the export dir; refusing")
        res = set_peft_model_state_dict(model.llm, load_safetensors(f, device=str(model.device)))
        if getattr(res, "unexpected_keys", None):
            raise ConfigError(f"{f}: unexpected LoRA tensors {res.unexpected_keys[:3]}")


# ---- audio -> pieces -----------------------------------------------------------------------------

def audio_pieces(audio) -> list[np.ndarray]:
    """A path or 16 kHz float array -> pieces of <= 30 s (the long-audio policy above)."""
    if isinstance(audio, (str, Path)):
        audio = load_audio(audio)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ConfigError(f"audio: expected a mono 1-D array at {SAMPLE_RATE} Hz, got shape {audio.shape}")
    pieces = chunk_audio(audio)
    if len(pieces) > 1 and len(pieces[-1]) < MIN_SECONDS * SAMPLE_RATE:
        pieces = pieces[:-1]
    return pieces


# ---- conversations -------------------------------------------------------------------------------

class Conversation:
    """Multi-turn chat with audio: `add_audio` clips, then `ask` / `stream` an instruction.

    Every turn re-encodes the whole history (no cross-turn KV cache): simple and exact.
    """

    def __init__(self, model, system=USE_DEFAULT):
        from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT

        self.model = model
        self.system = DEFAULT_SYSTEM_PROMPT if system is USE_DEFAULT else system
        self.reset()

    def reset(self) -> None:
        self.turns: list[dict] = []  # {"role", "instruction"|"content", "clips": [[piece, ...], ...]}
        self.pending: list[list[np.ndarray]] = []

    def add_audio(self, audio) -> int:
        """Queue a clip (path or array) for the next user turn; returns its number of pieces."""
        pieces = audio_pieces(audio)
        self.pending.append(pieces)
        return len(pieces)

    def _user_text(self, turn: dict) -> str:
        from speech_adapter.prompts import student_user_message

        if not turn["clips"]:
            return turn["instruction"]
        ph = self.model.config.placeholder
        slot = "\n".join(ph * len(clip) for clip in turn["clips"])
        transcript = turn.get("transcript") if self.model.config.use_transcript else None
        return student_user_message(turn["instruction"], slot, transcript)

    def _transcribe(self, clips) -> str | None:
        if not self.model.config.use_transcript or not clips:
            return None
        from speech_adapter.models.encoder import transcribe

        m = self.model
        if m.whisper_tokenizer is None:
            raise ConfigError("use_transcript needs the Whisper tokenizer (load with SpeechLM.from_pretrained)")
        texts = transcribe(m.whisper, m.encoder.feature_extractor, m.whisper_tokenizer,
                           [p for clip in clips for p in clip])
        return " ".join(t.strip() for t in texts)

    def _inputs(self) -> torch.Tensor:
        """inputs_embeds (1, S, H) of the whole conversation with a generation prompt."""
        m = self.model
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        pieces = []
        for t in self.turns:
            if t["role"] == "user":
                msgs.append({"role": "user", "content": self._user_text(t)})
                pieces += [p for clip in t["clips"] for p in clip]
            else:
                msgs.append({"role": "assistant", "content": t["content"]})
        text = m.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = m.tokenizer(text, add_special_tokens=False).input_ids
        if ids.count(m.placeholder_id) != len(pieces):
            raise ConfigError(f"the prompt holds {ids.count(m.placeholder_id)} placeholders for "
                              f"{len(pieces)} audio pieces (does an instruction contain {m.config.placeholder}?)")
        expanded, k = [], 0
        for i in ids:  # each placeholder -> as many ids as the adapter emits for its piece
            if i == m.placeholder_id:
                expanded += [i] * m.num_audio_tokens(len(pieces[k]))
                k += 1
            else:
                expanded.append(i)
        input_ids = torch.tensor([expanded], device=m.device)  # (1, S)
        is_ph = input_ids == m.placeholder_id  # (1, S)
        embeds = m.causal_lm.get_input_embeddings()(input_ids.masked_fill(is_ph, m.pad_id))  # (1, S, H)
        if pieces:
            feats, mel_lengths = m.encoder.features(pieces)  # (A, n_mels, F), (A,)
            states, lengths = m.encoder(feats, mel_lengths)  # (A, L, T, D), (A,)
            a_dtype = next(m.adapter.parameters()).dtype
            audio, n_tok = m.adapter(states.to(m.device, a_dtype), lengths.to(m.device))  # (A, N, H)
            valid = torch.arange(audio.shape[1], device=m.device)[None] < n_tok[:, None]  # (A, N)
            if int(n_tok.sum()) != int(is_ph.sum()):
                raise ConfigError(f"adapter emitted {int(n_tok.sum())} audio tokens for {int(is_ph.sum())} slots")
            embeds = embeds.masked_scatter(is_ph[..., None], audio[valid].to(embeds.dtype))
        return embeds

    @torch.no_grad()
    def stream(self, instruction: str, max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:
        """Yield the reply's text as it is generated (greedy when temperature is 0).

        The user turn (with the queued clips) and the finished reply join the history at the end.
        """
        from transformers import DynamicCache

        from speech_adapter.models.speechlm import _pick

        m = self.model
        turn = {"role": "user", "instruction": instruction, "clips": self.pending}
        turn["transcript"] = self._transcribe(self.pending)
        self.turns.append(turn)
        try:
            inp = self._inputs()
        except Exception:
            self.turns.pop()
            raise
        self.pending = []
        gen = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        stop = {m.eot_id, m.tokenizer.eos_token_id} - {None}
        attn = torch.ones(1, inp.shape[1], dtype=torch.long, device=m.device)
        cache, out, shown = DynamicCache(), [], ""
        for _ in range(max_new_tokens):
            pos = torch.arange(attn.shape[1] - inp.shape[1], attn.shape[1], device=m.device)[None]
            o = m.causal_lm(inputs_embeds=inp, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True)
            cache = o.cache
            nxt = _pick(o.logits[:, -1].float(), temperature > 0, temperature, top_p, gen)  # (1,)
            if int(nxt) in stop:
                break
            out.append(int(nxt))
            text = m.tokenizer.decode(out, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                yield text[len(shown):]
                shown = text
            attn = torch.cat([attn, torch.ones(1, 1, dtype=attn.dtype, device=m.device)], 1)
            inp = m.causal_lm.get_input_embeddings()(nxt[:, None])  # (1, 1, H)
        reply = m.tokenizer.decode(out, skip_special_tokens=True).strip()
        if len(reply) > len(shown.strip()):
            yield m.tokenizer.decode(out, skip_special_tokens=True)[len(shown):]
        self.turns.append({"role": "assistant", "content": reply})

    def ask(self, instruction: str, **gen) -> str:
        """The whole reply to `instruction` (see `stream` for the options)."""
        "".join(self.stream(instruction, **gen))
        return self.turns[-1]["content"]


def ask(model, audio, instruction: str, system=USE_DEFAULT, **gen) -> str:
    """One question about one clip (path or 16 kHz float array; long audio is chunked).

    gen: max_new_tokens, temperature (0 = greedy), top_p, seed.
    """
    conv = Conversation(model, system=system)
    if audio is not None:
        conv.add_audio(audio)
    return conv.ask(instruction, **gen)


__all__ = ["load", "ask", "Conversation", "audio_pieces", "USE_DEFAULT"]
