"""SpeechLM: frozen Whisper encoder → trainable adapter → frozen chat LLM (DeSTA2 layout).

The user turn of the LLM's own chat template holds `<|AUDIO|>`; `collate` expands it into as
many placeholder ids as the adapter will emit for that clip (LLaVA / Qwen2-Audio processors do
the same), and `forward` overwrites the embeddings at those positions with the adapter outputs.
The placeholder id therefore never reaches the LLM's embedding table, so the LLM needs no
resize: its vocabulary (and logits) stay identical to the text teacher's, which KL distillation
(Ultravox, DiVA) relies on. Batches are right-padded with explicit position ids, so an example's
logits do not depend on its batch mates; generation left-pads and decodes with a KV cache.
Only the adapter (and LoRA through peft, when configured) has requires_grad.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speech_adapter.config import from_dict, to_dict
from speech_adapter.errors import ConfigError, DataError, ModelNotFoundError
from speech_adapter.models.adapters import build_adapter
from speech_adapter.models.config import ModelConfig
from speech_adapter.models.encoder import AudioEncoder, transcribe
from speech_adapter.prompts import student_user_message, teacher_user_message

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA_DIR = "lora"
FORMAT_VERSION = 1
IGNORE = -100


@dataclass
class SpeechLMOutput:
    """loss: mean CE over target tokens (None without labels).

    logits="all": logits (B, S, V), labels (B, S) unshifted (logits[:, t] predicts labels[:, t+1]).
    logits="targets": logits (N, V), labels (N,) aligned: logits[i] predicts labels[i], the N
    target tokens in batch order (so a text-mode teacher batch of the same rows lines up).
    """

    loss: torch.Tensor | None
    logits: torch.Tensor
    labels: torch.Tensor | None


class SpeechLM(nn.Module):
    def __init__(self, config: ModelConfig, whisper, feature_extractor, llm, tokenizer,
                 whisper_tokenizer=None):
        super().__init__()
        self.config = config
        self.whisper = whisper  # kept whole for transcripts (use_transcript)
        self.whisper_tokenizer = whisper_tokenizer
        enc = whisper.model.encoder
        layers = config.tapped_layers(len(enc.layers))
        self.encoder = AudioEncoder(enc, feature_extractor, layers, config.max_audio_seconds)
        self.tokenizer = tokenizer
        if config.placeholder not in tokenizer.get_vocab():
            tokenizer.add_tokens([config.placeholder], special_tokens=True)
        self.placeholder_id = tokenizer.convert_tokens_to_ids(config.placeholder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = tokenizer.pad_token_id
        for p in whisper.parameters():
            p.requires_grad_(False)
        for p in llm.parameters():
            p.requires_grad_(False)
        llm_dim = llm.get_input_embeddings().weight.shape[1]
        self.adapter = build_adapter(config.adapter, self.encoder.dim, len(layers), llm_dim,
                                     frame_rate=self.encoder.frame_rate)
        if config.adapter.output_norm:  # loaded weights replace this start value
            self.adapter.set_output_scale(_rms(llm.get_input_embeddings().weight))
        if config.lora is not None:
            from peft import LoraConfig as PeftLoraConfig, get_peft_model

            lc = config.lora
            try:
                llm = get_peft_model(llm, PeftLoraConfig(r=lc.rank, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                         target_modules=list(lc.target_modules), bias="none"))
            except ValueError as e:
                raise ConfigError(f"lora.target_modules: {lc.target_modules} do not fit the LLM "
                                  f"({str(e).splitlines()[0][:200]})") from None
        self.llm = llm
        self.whisper.eval()
        self.llm.eval()
        self.eot_id = self._find_eot()

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def build(cls, config: ModelConfig) -> "SpeechLM":
        """Load both base models (offline refs, local dirs, cached hub ids; `tiny:*` for tests)."""
        from speech_adapter.models import loading, tiny

        if config.encoder.startswith("tiny:") or config.llm.startswith("tiny:"):
            if config.encoder != "tiny:whisper" or config.llm != "tiny:llm":
                raise ConfigError("tiny models come as a pair: encoder 'tiny:whisper', llm 'tiny:llm'")
            whisper, fe, wtok = tiny.tiny_whisper()
            llm, tok = tiny.tiny_llm()
            whisper, llm = whisper.to(loading.DTYPES[config.dtype]), llm.to(loading.DTYPES[config.dtype])
        else:
            whisper, fe, wtok = loading.load_whisper(config.encoder, config.dtype)
            llm, tok = loading.load_llm(config.llm, config.dtype, config.trust_remote_code)
        return cls(config, whisper, fe, llm, tok, whisper_tokenizer=wtok)

    @classmethod
    def from_components(cls, config: ModelConfig, whisper, feature_extractor, llm, tokenizer,
                        whisper_tokenizer=None) -> "SpeechLM":
        """Wrap already-built models (tests, custom loaders)."""
        return cls(config, whisper, feature_extractor, llm, tokenizer, whisper_tokenizer)

    @classmethod
    def from_pretrained(cls, directory, **kwargs) -> "SpeechLM":
        """Rebuild from an export / `save_adapter` / run dir: its config names the base models,
        checked against the recorded checksums and shapes (`inference.api.load`; kwargs:
        ignore_mismatch, trust_remote_code, encoder, llm, dtype)."""
        from speech_adapter.inference.api import load

        return load(directory, **kwargs)

    def ask(self, audio, instruction: str, **kwargs) -> str:
        """Reply to `instruction` about `audio` (path or 16 kHz array); see `inference.api.ask`."""
        from speech_adapter.inference.api import ask

        return ask(self, audio, instruction, **kwargs)

    # ---- helpers -------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Train the adapter (and LoRA); the frozen Whisper always stays in eval mode, the LLM too
        unless LoRA is on (its dropout needs train mode)."""
        super().train(mode)
        self.whisper.eval()
        if self.config.lora is None:
            self.llm.eval()
        return self

    @property
    def causal_lm(self):
        """The underlying HF causal LM (LoRA layers, if any, are injected into it in place)."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    @property
    def device(self) -> torch.device:
        return self.causal_lm.get_input_embeddings().weight.device

    def _find_eot(self) -> int:
        """The end-of-turn token: the first token the template puts after an assistant reply."""
        tok = self.tokenizer
        msgs = [{"role": "user", "content": "hi"}]
        prefix = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "XYZ"}], tokenize=False)
        tail = full[len(prefix):] if full.startswith(prefix) else full[full.rfind("XYZ"):]
        tail = tail[tail.find("XYZ") + 3:]
        ids = tok(tail, add_special_tokens=False).input_ids
        special = set(tok.all_special_ids)
        for i in ids:
            if i in special:
                return i
        if tok.eos_token_id is None:
            raise ConfigError("the LLM tokenizer has no end-of-turn or eos token")
        return tok.eos_token_id

    def num_audio_tokens(self, num_samples: int) -> int:
        """Audio tokens the adapter emits for a clip of `num_samples` at 16 kHz."""
        frames = self.encoder.output_length(self.encoder.mel_length(num_samples))
        return int(self.adapter.num_tokens(torch.tensor([frames]))[0])

    def user_message(self, ex: dict, mode: str, transcript: str | None = None) -> str:
        instruction = ex.get("instruction") or ""
        if mode == "text":
            desc = ex.get("description")
            return teacher_user_message(desc, instruction) if desc else instruction
        if ex.get("audio") is None:
            return instruction
        return student_user_message(instruction, self.config.placeholder,
                                    transcript if self.config.use_transcript else None)

    def prompt_ids(self, ex: dict, mode: str = "audio", transcript: str | None = None) -> list[int]:
        """Chat-template prompt ids ending with the assistant header; placeholders expanded."""
        msgs = []
        if ex.get("system"):
            msgs.append({"role": "system", "content": ex["system"]})
        msgs.append({"role": "user", "content": self.user_message(ex, mode, transcript)})
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        n_ph = ids.count(self.placeholder_id)
        if mode == "audio" and ex.get("audio") is not None:
            if n_ph != 1:
                raise ConfigError(f"the prompt must hold the placeholder {self.config.placeholder} once, "
                                  f"found {n_ph} times")
            i = ids.index(self.placeholder_id)
            n = self.num_audio_tokens(np.asarray(ex["audio"]).size)
            ids = ids[:i] + [self.placeholder_id] * n + ids[i + 1:]
        elif n_ph:
            raise ConfigError(f"placeholder {self.config.placeholder} appears in a text without audio")
        return ids

    def _transcripts(self, examples) -> list[str | None]:
        out = [ex.get("transcript") for ex in examples]
        if not self.config.use_transcript:
            return out
        todo = [i for i, ex in enumerate(examples) if ex.get("audio") is not None and out[i] is None]
        if todo:
            if self.whisper_tokenizer is None:
                raise ConfigError("use_transcript needs the Whisper tokenizer (build with SpeechLM.build)")
            texts = transcribe(self.whisper, self.encoder.feature_extractor, self.whisper_tokenizer,
                               [examples[i]["audio"] for i in todo])
            for i, t in zip(todo, texts):
                out[i] = t
        return out

    # ---- batching ------------------------------------------------------------------------
    def collate(self, examples: list[dict], mode: str = "audio") -> dict:
        """Right-padded batch: input_ids, attention_mask, position_ids, labels (+ audio features).

        labels are IGNORE (-100) except the response tokens and the end-of-turn token. With
        mode="text" the description takes the audio's place (teacher / text-side rows).
        """
        if mode not in ("audio", "text"):
            raise ConfigError(f"mode: {mode!r} is not 'audio' or 'text'")
        for i, ex in enumerate(examples):
            _check_example(i, ex)
        transcripts = self._transcripts(examples) if mode == "audio" else [None] * len(examples)
        seqs, labs = [], []
        for ex, tr in zip(examples, transcripts):
            ids = self.prompt_ids(ex, mode, tr)
            lab = [IGNORE] * len(ids)
            if ex.get("response") is not None:
                resp = self.tokenizer(ex["response"], add_special_tokens=False).input_ids + [self.eot_id]
                ids, lab = ids + resp, lab + resp
            seqs.append(ids)
            labs.append(lab)
        s = max(len(x) for x in seqs)
        b = len(seqs)
        input_ids = torch.full((b, s), self.pad_id, dtype=torch.long)
        labels = torch.full((b, s), IGNORE, dtype=torch.long)
        attn = torch.zeros((b, s), dtype=torch.long)
        for i, (ids, lab) in enumerate(zip(seqs, labs)):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            attn[i, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attn,
                 "position_ids": (attn.cumsum(-1) - 1).clamp(min=0), "labels": labels}
        audio_rows = [i for i, ex in enumerate(examples) if mode == "audio" and ex.get("audio") is not None]
        if audio_rows:
            feats, mel_lengths = self.encoder.features([examples[i]["audio"] for i in audio_rows])
            batch.update(input_features=feats, mel_lengths=mel_lengths,
                         audio_rows=torch.tensor(audio_rows, dtype=torch.long))
        return batch

    def encode_audio(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen encoder's tapped states for the batch's clips: (A, L, T, D), lengths (A,)."""
        with torch.no_grad():
            return self.encoder(batch["input_features"], batch["mel_lengths"])

    def embed(self, batch: dict, encoder_states=None) -> torch.Tensor:
        """inputs_embeds (B, S, H) with the adapter outputs at the placeholder positions."""
        input_ids = batch["input_ids"].to(self.device)
        is_ph = input_ids == self.placeholder_id  # (B, S)
        emb_layer = self.causal_lm.get_input_embeddings()
        embeds = emb_layer(input_ids.masked_fill(is_ph, self.pad_id))  # (B, S, H)
        if "input_features" not in batch:
            if bool(is_ph.any()):
                raise ConfigError("the batch has audio placeholders but no audio features")
            return embeds
        states, lengths = encoder_states if encoder_states is not None else self.encode_audio(batch)
        a_dtype = next(self.adapter.parameters()).dtype
        audio, n_tok = self.adapter(states.to(self.device, a_dtype), lengths.to(self.device))  # (A, N, H)
        valid = torch.arange(audio.shape[1], device=self.device)[None] < n_tok[:, None]  # (A, N)
        rows = batch["audio_rows"].to(self.device)
        expected = is_ph[rows].sum(-1)
        if not torch.equal(expected, n_tok):
            raise ConfigError(f"audio tokens per clip {n_tok.tolist()} do not match the placeholders "
                              f"laid out by collate {expected.tolist()} (stale encoder cache?)")
        # row-major placeholder order == audio clips in row order == valid adapter outputs in order
        embeds = embeds.masked_scatter(is_ph[..., None], audio[valid].to(embeds.dtype))
        return embeds

    # ---- forward -------------------------------------------------------------------------
    def forward(self, batch: dict, encoder_states=None, logits: str = "all") -> SpeechLMOutput:
        """Loss and logits for a `collate` batch; `encoder_states=(states, lengths)` skips the encoder."""
        if logits not in ("all", "targets"):
            raise ConfigError(f"logits: {logits!r} is not 'all' or 'targets'")
        embeds = self.embed(batch, encoder_states)
        attn = batch["attention_mask"].to(self.device)
        pos = batch["position_ids"].to(self.device)
        labels = batch.get("labels")
        labels = labels.to(self.device) if labels is not None else None
        lm = self.causal_lm
        if logits == "all":
            out = lm(inputs_embeds=embeds, attention_mask=attn, position_ids=pos, use_cache=False)
            all_logits = out.logits  # (B, S, V)
            loss = None
            if labels is not None and bool((labels[:, 1:] != IGNORE).any()):
                loss = nn.functional.cross_entropy(
                    all_logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)
            return SpeechLMOutput(loss, all_logits, labels)
        if labels is None:
            raise ConfigError('logits="targets" needs labels in the batch')
        body = getattr(lm, lm.base_model_prefix)
        n = self._shared_prefix_length(batch["input_ids"].to(self.device), attn, labels)
        if n:
            hidden = self._forward_after_prefix(body, embeds, attn, pos, n)  # (B, S-n, H)
        else:
            hidden = body(inputs_embeds=embeds, attention_mask=attn, position_ids=pos,
                          use_cache=False).last_hidden_state  # (B, S, H)
        tgt = labels[:, n + 1:] != IGNORE  # (B, S-n-1): position t predicts label t+1
        h = hidden[:, :-1][tgt]  # (N, H)
        t_logits = lm.get_output_embeddings()(h)  # (N, V)
        t_labels = labels[:, n + 1:][tgt]  # (N,)
        loss = nn.functional.cross_entropy(t_logits.float(), t_labels) if t_labels.numel() else None
        return SpeechLMOutput(loss, t_logits, t_labels)

    # Rows of a batch begin with the same system prompt and chat header (45 tokens of a 120-130-token
    # row). With the LLM frozen and no LoRA that prefix's keys and values do not depend on anything
    # trained, so `forward(logits="targets")` computes them once for the batch, not once per row.
    MIN_SHARED_PREFIX = 8

    def _shared_prefix_length(self, input_ids, attn, labels) -> int:
        """Tokens every row shares before its first audio token and first target; 0 = no sharing."""
        b, s = input_ids.shape
        if b < 2 or self.config.lora is not None:
            return 0
        ok = ((input_ids == input_ids[:1]).all(0) & (input_ids != self.placeholder_id).all(0)
              & attn.bool().all(0))  # (S,)
        # the last shared position's output predicts the next token: it must not be a target
        ok[:-1] &= (labels[:, 1:] == IGNORE).all(0)
        n = int(ok.long().cumprod(0).sum())
        return n if self.MIN_SHARED_PREFIX <= n < s else 0

    def _forward_after_prefix(self, body, embeds, attn, pos, n: int) -> torch.Tensor:
        """Hidden states of positions n.. of every row, the first n tokens run once (batch of 1)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.causal_lm.config)
        with torch.no_grad():
            body(inputs_embeds=embeds[:1, :n], attention_mask=attn[:1, :n], position_ids=pos[:1, :n],
                 cache=cache, use_cache=True)
        cache.batch_repeat_interleave(embeds.shape[0])
        return body(inputs_embeds=embeds[:, n:], attention_mask=attn, position_ids=pos[:, n:],
                    cache=cache, use_cache=True).last_hidden_state

    # ---- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, examples: list[dict], max_new_tokens: int = 128, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, mode: str = "audio",
                 seed: int | None = None, return_stop: bool = False):
        """Replies to `examples` (responses ignored); batched, left-padded, KV-cached decoding.

        With `return_stop`, (replies, stops): each stop is "eos" (an end-of-turn token ended the
        reply) or "length" (cut at max_new_tokens)."""
        if not examples:
            return ([], []) if return_stop else []
        was_training = self.training
        self.eval()
        try:
            texts, stops = self._generate(examples, max_new_tokens, do_sample, temperature, top_p, mode, seed)
        finally:
            self.train(was_training)
        return (texts, stops) if return_stop else texts

    def _generate(self, examples, max_new_tokens, do_sample, temperature, top_p, mode, seed):
        from transformers import DynamicCache

        exs = [{**ex, "response": None} for ex in examples]
        batch = self.collate(exs, mode=mode)
        embeds = self.embed(batch)  # (B, S, H) right-padded
        attn = batch["attention_mask"].to(self.device)
        b, s, _ = embeds.shape
        lens = attn.sum(-1)
        # right -> left padding: roll each row so its tokens end at column S-1
        idx = (torch.arange(s, device=self.device)[None] - (s - lens)[:, None]) % s  # (B, S)
        embeds = embeds.gather(1, idx[..., None].expand_as(embeds))
        attn = attn.gather(1, idx)
        gen = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        lm = self.causal_lm
        cache = DynamicCache()
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        stop = {self.eot_id, self.tokenizer.eos_token_id} - {None}
        out_ids: list[torch.Tensor] = []
        inp = embeds
        for _ in range(max_new_tokens):
            pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, -inp.shape[1]:]
            # only the last position's logits: over a 151k vocabulary the prefill's full logits
            # would cost a quarter of its FLOPs and B x S x V floats of memory
            o = lm(inputs_embeds=inp, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True,
                   logits_to_keep=1)
            cache = o.cache
            nxt = _pick(o.logits[:, -1].float(), do_sample, temperature, top_p, gen)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            out_ids.append(nxt)
            done |= torch.isin(nxt, torch.tensor(sorted(stop), device=self.device))
            if bool(done.all()):
                break
            attn = torch.cat([attn, torch.ones(b, 1, dtype=attn.dtype, device=self.device)], 1)
            inp = self.causal_lm.get_input_embeddings()(nxt[:, None])  # (B, 1, H)
        texts, stops = [], []
        for row in torch.stack(out_ids, 1).tolist():
            cut = next((i for i, t in enumerate(row) if t in stop), None)
            stops.append("length" if cut is None else "eos")
            texts.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        return texts, stops

    # ---- weights -------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changes, named as in this module: the parameters with requires_grad
        (adapter, LoRA) and the adapter's buffers (its fitted feature statistics)."""
        state = {k: p.detach() for k, p in self.named_parameters() if p.requires_grad}
        state.update({f"adapter.{k}": b.detach() for k, b in self.adapter.named_buffers()})
        return state

    def fit_feature_norm(self, batches) -> int | None:
        """Fit the adapter's feature statistics on `batches` of encoder (states, lengths); returns
        the frames read, or None when the adapter has no feature normalization."""
        norm = getattr(self.adapter, "feature_norm", None)
        if not hasattr(norm, "fit"):
            return None
        return norm.fit(batches)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in self.adapter.state_dict().items()}

    def save_adapter(self, directory) -> Path:
        """Write adapter.safetensors, adapter_config.json and (with LoRA) lora/ in peft format."""
        from safetensors.torch import save_file

        from speech_adapter import __version__
        from speech_adapter.utils.io import atomic_path, write_json_atomic

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / ADAPTER_WEIGHTS) as tmp:
            save_file(self.adapter_state_dict(), str(tmp), metadata={"format": "pt"})
        if self.config.lora is not None:
            _save_lora_atomic(self.llm, d / LORA_DIR)
        write_json_atomic(d / ADAPTER_CONFIG, {
            "format_version": FORMAT_VERSION, "speech_adapter_version": __version__,
            "model": to_dict(self.config), "tapped_layers": self.encoder.layers,
            "encoder_dim": self.encoder.dim, "llm_vocab_size": self.causal_lm.get_input_embeddings().num_embeddings,
        })
        return d

    def load_adapter(self, directory) -> None:
        """Load weights written by `save_adapter` into this model (same config)."""
        d = Path(directory)
        path = d / ADAPTER_WEIGHTS
        if not path.exists():
            from speech_adapter.utils.safety import refuse_pickles

            refuse_pickles(d, "adapter weights")
            raise ModelNotFoundError(f"{path}: no adapter weights (expected {ADAPTER_WEIGHTS})")
        saved = read_adapter_config(d)
        if to_dict(saved.adapter) != to_dict(self.config.adapter):
            raise ConfigError(f"{d / ADAPTER_CONFIG}: adapter config {to_dict(saved.adapter)} differs from "
                              f"this model's {to_dict(self.config.adapter)}")
        from speech_adapter.utils.safety import load_safetensors

        state = load_safetensors(path, device=str(self.device))
        missing, unexpected = self.adapter.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{path}: tensors do not fit the adapter (missing {missing}, unexpected {unexpected})")
        lora_dir = d / LORA_DIR
        if (self.config.lora is None) != (not lora_dir.exists()):
            raise ConfigError(f"{d}: LoRA {'present' if lora_dir.exists() else 'absent'} in the dir but "
                              f"lora is {'null' if self.config.lora is None else 'set'} in this model's config")
        if lora_dir.exists():
            from peft import set_peft_model_state_dict

            lora_file = lora_dir / "adapter_model.safetensors"
            res = set_peft_model_state_dict(self.llm, load_safetensors(lora_file, device=str(self.device)))
            bad = getattr(res, "unexpected_keys", None)
            if bad:
                raise ConfigError(f"{lora_file}: unexpected LoRA tensors {bad[:3]}")


@torch.no_grad()
def _rms(weight: torch.Tensor, rows: int = 8192) -> float:
    """Root mean square of `weight`, in fp32 a block of rows at a time (an 8B model's embedding
    table is 0.5 G entries: a whole fp32 copy would cost 2 GB at start-up)."""
    sq = sum(float(block.float().pow(2).sum()) for block in weight.split(rows))
    return (sq / weight.numel()) ** 0.5


def _check_example(i: int, ex) -> None:
    """DataError naming the example and key for a malformed example dict."""
    if not isinstance(ex, dict):
        raise DataError(f"example {i}: expected a dict, got {type(ex).__name__}")
    for key in ("instruction", "response", "system", "transcript", "description"):
        if ex.get(key) is not None and not isinstance(ex[key], str):
            raise DataError(f"example {i}: '{key}' must be a string, got {type(ex[key]).__name__}")
    if not isinstance(ex.get("instruction"), str):
        raise DataError(f"example {i}: missing key 'instruction'")
    audio = ex.get("audio")
    if audio is not None and np.asarray(audio).ndim != 1:
        raise DataError(f"example {i}: 'audio' must be a 1-D 16 kHz waveform (use speech_adapter.audio."
                        f"load_audio), got shape {tuple(np.asarray(audio).shape)}")


def _save_lora_atomic(peft_model, target: Path) -> None:
    """peft's save_pretrained into a temp dir, then swapped into place (no torn lora/)."""
    import shutil

    tmp, old = target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _pick(logits, do_sample, temperature, top_p, gen):
    """Greedy, or temperature + nucleus sampling, over logits (B, V) -> (B,)."""
    if not do_sample:
        return logits.argmax(-1)
    probs = (logits / max(temperature, 1e-5)).softmax(-1)
    if top_p < 1.0:
        sp, si = probs.sort(-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p  # always keeps the top token
        sp = sp * keep
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(logits.device)


def read_adapter_config(directory) -> ModelConfig:
    """The ModelConfig stored in `directory/adapter_config.json` (ConfigError names the file)."""
    path = Path(directory) / ADAPTER_CONFIG
    if not path.exists():
        raise ModelNotFoundError(f"{path}: not found; is {directory} a speech_adapter adapter dir?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict) or "model" not in data:
        raise ConfigError(f"{path}: missing key 'model'")
    model = data["model"]
    adapter = model.get("adapter") if isinstance(model, dict) else None
    if isinstance(adapter, dict):  # keys saved before they existed: off, as those adapters were trained
        missing = {k: False for k in ("feature_norm", "output_norm") if k not in adapter}
        if missing:
            model = {**model, "adapter": {**adapter, **missing}}
    try:
        return from_dict(ModelConfig, model)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
