"""SpeechLM: frozen Whisper encoder → trainable adapter → frozen chat LLM (DeSTA2 layout).

The model is math (Ultravox's `UltravoxModel` split): `embed` puts the adapter outputs at the
placeholder positions of a batch that `models.processor.SpeechProcessor` built, `forward` gives
the loss and logits at the target tokens only (Qwen's 151k vocabulary makes full logits costly),
`all_logits` every position's, `stream` / `generate` decode with a KV cache. Only the adapter (and
LoRA through peft, when configured) has requires_grad. The adapter directory's format belongs to
`models.adapter_dir`; `from_pretrained` / `save_adapter` go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache

from speech_adapter.errors import ConfigError
from speech_adapter.models import adapter_dir, loading
from speech_adapter.models.adapters import build_adapter
from speech_adapter.models.config import ModelConfig
from speech_adapter.models.encoder import AudioEncoder
from speech_adapter.models.processor import IGNORE, SpeechProcessor, audio_pieces
from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, REPETITION_PENALTY, chat_messages

# The shortest shared prompt prefix worth running once per batch (see `_shared_prefix_length`).
MIN_SHARED_PREFIX = 8


@dataclass
class SpeechLMOutput:
    """loss: mean CE over target tokens (None without targets). `forward`: logits (N, V) and labels
    (N,) of the N target tokens in batch order (logits[i] predicts labels[i]); `all_logits`:
    logits (B, S, V), labels None (logits[:, t] predicts the batch's labels[:, t+1])."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    labels: torch.Tensor | None = None


def _word_embeddings(table: torch.Tensor, tokenizer, words: list[str]) -> torch.Tensor | None:
    """(K, H): each word's row of the input-embedding `table` (the mean of its tokens'), or None
    without words."""
    if not words:
        return None
    rows = []
    for w in words:
        ids = tokenizer(w, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError(f"voice_words: {w!r} has no tokens in this LLM's vocabulary")
        rows.append(table[ids].detach().float().mean(0))
    return torch.stack(rows)


class SpeechLM(nn.Module):
    def __init__(self, config: ModelConfig, whisper, feature_extractor, llm, tokenizer,
                 whisper_tokenizer=None, share_prefix: bool = True):
        """share_prefix: run a batch's common prompt prefix once in `forward` (off for measuring
        the plain forward; it never changes the result)."""
        super().__init__()
        self.config = config
        self.share_prefix = share_prefix
        self.whisper = whisper  # kept whole for transcripts (use_transcript)
        enc = whisper.model.encoder
        layers = config.tapped_layers(len(enc.layers))
        self.encoder = AudioEncoder(enc, feature_extractor, layers, config.max_audio_seconds, voice=config.voice_features)
        for p in list(whisper.parameters()) + list(llm.parameters()):
            p.requires_grad_(False)
        table = llm.get_input_embeddings().weight
        self.adapter = build_adapter(config.adapter, self.encoder.dim, len(layers), table.shape[1],
                                     frame_rate=self.encoder.frame_rate, voice=config.voice_features,
                                     voice_words=_word_embeddings(table, tokenizer, config.voice_words))
        if config.adapter.output_norm:  # loaded weights replace this start value
            self.adapter.set_output_scale(_rms(table))
        self.processor = SpeechProcessor(config, tokenizer, self.encoder, self.adapter.num_tokens,
                                         whisper, whisper_tokenizer)
        if config.voice_line is not None:
            self.processor.voice_probabilities = self.voice_probabilities
        self.placeholder_id, self.pad_id = self.processor.placeholder_id, self.processor.pad_id
        self.eot_id = self.processor.eot_id
        if config.lora is not None:
            from peft import LoraConfig as PeftLoraConfig, get_peft_model  # peft loads only with LoRA

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

    @classmethod
    def build(cls, config: ModelConfig) -> "SpeechLM":
        """Load both base models (offline refs, local dirs, cached hub ids; `tiny:*` for tests)."""
        if config.encoder.startswith("tiny:") or config.llm.startswith("tiny:"):
            if config.encoder != "tiny:whisper" or config.llm != "tiny:llm":
                raise ConfigError("tiny models come as a pair: encoder 'tiny:whisper', llm 'tiny:llm'")
        whisper, fe, wtok = loading.load_whisper(config.encoder, config.dtype)
        llm, tok = loading.load_llm(config.llm, config.dtype, config.trust_remote_code)
        return cls(config, whisper, fe, llm, tok, whisper_tokenizer=wtok)

    @classmethod
    def from_pretrained(cls, directory, *, ignore_mismatch: bool = False, trust_remote_code: bool = False,
                        encoder: str | None = None, llm: str | None = None, dtype: str | None = None) -> "SpeechLM":
        """Rebuild from an adapter dir (export, `save_adapter`) or a run dir: its config names the
        base models, checked against the recorded checksums and shapes before the weights load.

        encoder / llm: other refs for the base models; dtype: override the recorded one. Raises
        ConfigError on a mismatch (all of them) unless ignore_mismatch, ModelNotFoundError when a
        base model is not on this machine.
        """
        d, raw, config = adapter_dir.resolve(directory, trust_remote_code=trust_remote_code,
                                             encoder=encoder, llm=llm, dtype=dtype)
        adapter_dir.check_base_models(d, raw, config, ignore_mismatch)
        model = cls.build(config)
        adapter_dir.check_built(model, d, raw, ignore_mismatch)
        adapter_dir.load_weights(model, d, raw)
        return model.eval()

    def save_adapter(self, directory):
        """Write the adapter dir (`models.adapter_dir`): tensors, config, LoRA in peft format."""
        return adapter_dir.save(self, directory)

    def load_adapter(self, directory) -> None:
        """Load weights written by `save_adapter` into this model (same config)."""
        adapter_dir.load_weights(self, directory)

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
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return self.causal_lm.get_input_embeddings().weight.device

    # ---- embed and forward --------------------------------------------------------------------
    def encode_audio(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen encoder's tapped states for the batch's clips: (A, L, T, D), lengths (A,)."""
        with torch.no_grad():
            return self.encoder(batch["input_features"], batch["mel_lengths"])

    @torch.no_grad()
    def voice_inputs(self, clips: list | None = None, encoder_states=None) -> torch.Tensor:
        """(N, 3 + D'): the voice token's inputs (pitch statistics, timbre) for each 16 kHz clip,
        or for the encoder's `encoder_states=(states, lengths)` of N clips already encoded, in eval
        mode (no timbre dropout), on the adapter's device."""
        if encoder_states is None:
            feats, mel_lengths = self.encoder.features([np.asarray(c, dtype=np.float32) for c in clips])
            encoder_states = self.encoder(feats, mel_lengths)
        states, lengths = encoder_states
        was = self.adapter.training
        self.adapter.eval()
        try:
            a_dtype = next(self.adapter.parameters()).dtype
            return self.adapter.voice_inputs(states.to(self.device, a_dtype), lengths.to(self.device))
        finally:
            self.adapter.train(was)

    @torch.no_grad()
    def voice_probabilities(self, clips: list) -> torch.Tensor:
        """(N, 3) on the CPU: the voice token's gender head's probabilities over male, female and
        none (no speech) for each 16 kHz clip, in eval mode (model.voice_line writes the verdict)."""
        voice = self.adapter.voice
        if voice is None or voice.gender is None:
            raise ConfigError("this adapter has no voice gender head (model.adapter.voice_gender_loss > 0 "
                              "with voice_features)")
        return voice.gender_probabilities(self.voice_inputs(clips)).float().cpu()

    def embed(self, batch: dict, encoder_states=None) -> torch.Tensor:
        """inputs_embeds (B, S, H) with the adapter outputs at the placeholder positions."""
        input_ids = batch["input_ids"].to(self.device)
        is_ph = input_ids == self.placeholder_id  # (B, S)
        embeds = self.causal_lm.get_input_embeddings()(input_ids.masked_fill(is_ph, self.pad_id))  # (B, S, H)
        if "input_features" not in batch:
            if bool(is_ph.any()):
                raise ConfigError("the batch has audio placeholders but no audio features")
            return embeds
        states, lengths = encoder_states if encoder_states is not None else self.encode_audio(batch)
        a_dtype = next(self.adapter.parameters()).dtype
        audio, n_tok = self.adapter(states.to(self.device, a_dtype), lengths.to(self.device))  # (A, N, H)
        valid = torch.arange(audio.shape[1], device=self.device)[None] < n_tok[:, None]  # (A, N)
        rows = batch["audio_rows"].to(self.device)  # (A,): the row each clip sits in, in order
        per_row = torch.zeros(len(input_ids), dtype=n_tok.dtype, device=self.device).index_add_(0, rows, n_tok)
        if not torch.equal(per_row, is_ph.sum(-1).to(n_tok.dtype)):
            raise ConfigError(f"audio tokens per clip {n_tok.tolist()} do not match the placeholders "
                              f"laid out by the processor {is_ph.sum(-1).tolist()} (stale encoder cache?)")
        # row-major placeholder order == clips in row order == valid adapter outputs in order
        return embeds.masked_scatter(is_ph[..., None], audio[valid].to(embeds.dtype))

    def forward(self, batch: dict, encoder_states=None) -> SpeechLMOutput:
        """Loss and logits at the target tokens of a right-padded batch with labels;
        `encoder_states=(states, lengths)` skips the encoder."""
        if batch.get("labels") is None:
            raise ConfigError("forward needs labels in the batch (all_logits does not)")
        embeds = self.embed(batch, encoder_states)
        attn, pos = batch["attention_mask"].to(self.device), batch["position_ids"].to(self.device)
        labels = batch["labels"].to(self.device)
        lm = self.causal_lm
        body = getattr(lm, lm.base_model_prefix)
        n = self._shared_prefix_length(batch["input_ids"].to(self.device), attn, labels)
        if n:
            hidden = self._forward_after_prefix(body, embeds, attn, pos, n)  # (B, S-n, H)
        else:
            hidden = body(inputs_embeds=embeds, attention_mask=attn, position_ids=pos,
                          use_cache=False).last_hidden_state  # (B, S, H)
        tgt = labels[:, n + 1:] != IGNORE  # (B, S-n-1): position t predicts label t+1
        t_logits = lm.get_output_embeddings()(hidden[:, :-1][tgt])  # (N, V)
        t_labels = labels[:, n + 1:][tgt]  # (N,)
        loss = nn.functional.cross_entropy(t_logits.float(), t_labels) if t_labels.numel() else None
        return SpeechLMOutput(loss, t_logits, t_labels)

    def all_logits(self, batch: dict, encoder_states=None) -> SpeechLMOutput:
        """Logits (B, S, V) at every position, and the mean CE over the batch's labels if any."""
        embeds = self.embed(batch, encoder_states)
        out = self.causal_lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(self.device),
                             position_ids=batch["position_ids"].to(self.device), use_cache=False)
        labels, loss = batch.get("labels"), None
        if labels is not None and bool((labels[:, 1:] != IGNORE).any()):
            labels = labels.to(self.device)
            loss = nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                               ignore_index=IGNORE)
        return SpeechLMOutput(loss, out.logits)

    # Rows of a batch begin with the same system prompt and chat header, about a third of a short
    # row. With the LLM frozen and no LoRA that prefix's keys and values do not depend on anything
    # trained, so `forward` computes them once for the batch, not once per row.
    def _shared_prefix_length(self, input_ids, attn, labels) -> int:
        """Tokens every row shares before its first audio token and first target; 0 = no sharing."""
        b, s = input_ids.shape
        if b < 2 or self.config.lora is not None or not self.share_prefix:
            return 0
        ok = ((input_ids == input_ids[:1]).all(0) & (input_ids != self.placeholder_id).all(0)
              & attn.bool().all(0))  # (S,)
        # the last shared position's output predicts the next token: it must not be a target
        ok[:-1] &= (labels[:, 1:] == IGNORE).all(0)
        n = int(ok.long().cumprod(0).sum())
        return n if MIN_SHARED_PREFIX <= n < s else 0

    def _forward_after_prefix(self, body, embeds, attn, pos, n: int) -> torch.Tensor:
        """Hidden states of positions n.. of every row, the first n tokens run once (batch of 1)."""
        cache = DynamicCache(config=self.causal_lm.config)
        with torch.no_grad():
            body(inputs_embeds=embeds[:1, :n], attention_mask=attn[:1, :n], position_ids=pos[:1, :n],
                 cache=cache, use_cache=True)
        cache.batch_repeat_interleave(embeds.shape[0])
        return body(inputs_embeds=embeds[:, n:], attention_mask=attn, position_ids=pos[:, n:],
                    cache=cache, use_cache=True).last_hidden_state

    # ---- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def stream(self, batch: dict, max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 1.0,
               top_p: float = 1.0, seed: int | None = None,
               repetition_penalty: float = REPETITION_PENALTY) -> Iterator[torch.Tensor]:
        """Next token ids (B,) step by step for a left-padded batch, KV-cached; a finished row
        repeats the pad id; stops when every row has emitted a stop token.

        `repetition_penalty` > 1 lowers the logits of tokens this reply already holds
        (transformers' processor, CTRL's rule; Qwen2.5's generation config uses 1.1): a small
        LLM's greedy loops ("Female, Female, ...") end, and the prompt's words, which a transcript
        copies, are not penalized."""
        from transformers import RepetitionPenaltyLogitsProcessor

        penalize = RepetitionPenaltyLogitsProcessor(repetition_penalty) if repetition_penalty != 1.0 else None
        inp = self.embed(batch)  # (B, S, H)
        attn = batch["attention_mask"].to(self.device)
        b = inp.shape[0]
        gen = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        stop = torch.tensor(self.processor.stop_ids, device=self.device)
        cache, done = DynamicCache(), torch.zeros(b, dtype=torch.bool, device=self.device)
        # greedy: a finished row leaves the batch (its cache rows too). A step over a few rows
        # costs far less than over all of them on a CPU (0.2 s for 1 row, 0.75 s for 16 with
        # Qwen-0.5B), and one long reply no longer holds the whole batch. Sampling keeps every
        # row, so a seed draws the same numbers whatever finished first.
        prune = not do_sample
        alive = torch.arange(b, device=self.device)  # batch rows still decoding, in cache order
        replies: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, -inp.shape[1]:]
            # only the last position's logits: over a 151k vocabulary the prefill's full logits
            # would cost a quarter of its FLOPs and B x S x V floats of memory
            o = self.causal_lm(inputs_embeds=inp, attention_mask=attn, position_ids=pos, cache=cache,
                               use_cache=True, logits_to_keep=1)
            cache = o.cache
            logits = o.logits[:, -1].float()  # (A, V), A = len(alive)
            if penalize is not None and replies:
                logits = penalize(torch.stack(replies, 1)[alive], logits)
            step = sample_next(logits, do_sample, temperature, top_p, gen)  # (A,)
            nxt = torch.full((b,), self.pad_id, dtype=step.dtype, device=self.device)
            nxt[alive] = torch.where(done[alive], torch.full_like(step, self.pad_id), step)
            replies.append(nxt)
            yield nxt
            done |= torch.isin(nxt, stop)
            if bool(done.all()):
                return
            if prune and bool(done[alive].any()):
                keep = (~done[alive]).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                alive, attn = alive[keep], attn[keep]
            attn = torch.cat([attn, torch.ones(len(alive), 1, dtype=attn.dtype, device=self.device)], 1)
            inp = self.causal_lm.get_input_embeddings()(nxt[alive][:, None])  # (A, 1, H)

    @torch.no_grad()
    def generate(self, examples: list[dict], max_new_tokens: int = 128, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, mode: str = "audio",
                 seed: int | None = None, return_stop: bool = False,
                 repetition_penalty: float = REPETITION_PENALTY):
        """Replies to `examples` (responses ignored): one left-padded batch, decoded by `stream`.

        With `return_stop`, (replies, stops): each stop is "eos" (an end-of-turn token ended the
        reply) or "length" (cut at max_new_tokens). A model with voice_line always hears the voice
        itself here: an example's `voice` key (a training label) is ignored."""
        if not examples:
            return ([], []) if return_stop else []
        was_training = self.training
        self.eval()
        try:
            asked = [{**{k: v for k, v in ex.items() if k != "voice"}, "response": None} for ex in examples]
            batch = self.processor.collate(asked, mode, padding="left")
            steps = list(self.stream(batch, max_new_tokens, do_sample, temperature, top_p, seed, repetition_penalty))
            texts, stops = self.processor.decode(torch.stack(steps, 1).tolist())
        finally:
            self.train(was_training)
        return (texts, stops) if return_stop else texts

    def ask(self, audio, instruction: str, system: str | None = DEFAULT_SYSTEM_PROMPT, max_new_tokens: int = 256,
            temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
            repetition_penalty: float = REPETITION_PENALTY) -> str:
        """Reply to `instruction` about one clip (path or 16 kHz array; long audio in 30 s pieces)."""
        clips = [audio_pieces(audio)] if audio is not None else []
        transcript = " ".join(t.strip() for t in self.processor.transcribe(clips[0])) \
            if clips and self.config.use_transcript else None
        msgs = chat_messages(system, self.processor.user_turn(instruction, clips, transcript,
                                                              self.processor.turn_voice(clips)))
        batch = self.processor.chat_batch(msgs, [p for clip in clips for p in clip])
        tokens = (int(t) for t in self.stream(batch, max_new_tokens, temperature > 0, temperature, top_p, seed,
                                              repetition_penalty))
        out: list[int] = []
        "".join(self.processor.stream_text(tokens, out))
        return self.tokenizer.decode(out, skip_special_tokens=True).strip()

    # ---- weights ------------------------------------------------------------------------------
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
        return norm.fit(batches) if hasattr(norm, "fit") else None

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in self.adapter.state_dict().items()}


@torch.no_grad()
def _rms(weight: torch.Tensor, rows: int = 8192) -> float:
    """Root mean square of `weight`, in fp32 a block of rows at a time (an 8B model's embedding
    table is 0.5 G entries: a whole fp32 copy would cost 2 GB at start-up)."""
    sq = sum(float(block.float().pow(2).sum()) for block in weight.split(rows))
    return (sq / weight.numel()) ** 0.5


def sample_next(logits, do_sample, temperature, top_p, gen):
    """Greedy, or temperature + nucleus sampling, over logits (B, V) -> (B,)."""
    if not do_sample:
        return logits.argmax(-1)
    probs = (logits / max(temperature, 1e-5)).softmax(-1)
    if top_p < 1.0:
        sp, si = probs.sort(-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p  # always keeps the top token
        probs = torch.zeros_like(probs).scatter(-1, si, sp * keep)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(logits.device)
