"""SpeechProcessor: chat messages and audio in, the token batch a SpeechLM reads; token ids out, text.

As Ultravox's `UltravoxProcessor` beside `UltravoxModel`: the model is math (embed, forward,
generate), this is input building. The user turn of the LLM's own chat template holds
`<|AUDIO|>`; each placeholder is expanded into as many placeholder ids as the adapter emits for
its clip (LLaVA / Qwen2-Audio processors do the same), and the model overwrites the embeddings at
those positions. The placeholder id therefore never reaches the LLM's embedding table, so the LLM
needs no resize: its vocabulary (and logits) stay identical to the text teacher's.

Batches for training are right-padded, for generation left-padded; both carry explicit position
ids, so a row's logits do not depend on its batch mates.

Long-audio policy in conversations (Whisper sees at most 30 s): a clip longer than 30 s is cut
with `audio.chunk_audio` into consecutive pieces of <= 30 s; each piece gets its own placeholder,
in order, in the same user turn. A trailing piece shorter than 0.1 s is dropped. (A training row's
single clip gets one placeholder; the encoder joins its 30 s windows itself.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

import numpy as np
import torch

from speech_adapter.audio import MIN_SECONDS, SAMPLE_RATE, chunk_audio, load_audio
from speech_adapter.errors import ConfigError, DataError
from speech_adapter.models.adapters import VoiceToken
from speech_adapter.models.config import ModelConfig
from speech_adapter.models.encoder import AudioEncoder, transcribe
from speech_adapter.prompts import chat_messages, student_user_message, teacher_user_message

IGNORE = -100


def find_eot(tokenizer) -> int:
    """The end-of-turn token: the first special token the template puts after an assistant reply."""
    msgs = [{"role": "user", "content": "hi"}]
    prefix = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": "XYZ"}], tokenize=False)
    tail = full[len(prefix):] if full.startswith(prefix) else full[full.rfind("XYZ"):]
    tail = tail[tail.find("XYZ") + 3:]
    special = set(tokenizer.all_special_ids)
    for i in tokenizer(tail, add_special_tokens=False).input_ids:
        if i in special:
            return i
    if tokenizer.eos_token_id is None:
        raise ConfigError("the LLM tokenizer has no end-of-turn or eos token")
    return tokenizer.eos_token_id


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


VOICES = VoiceToken.GENDERS  # the voice token's gender head's classes: male, female, none


def voice_word(probabilities: torch.Tensor) -> str | None:
    """The voice line's word for one clip's head probabilities over VOICES: "male" or "female",
    None where "none" (no speech) is likeliest."""
    word = VOICES[int(probabilities.argmax())]
    return None if word == "none" else word


class SpeechProcessor:
    """Builds a SpeechLM's batches: prompts, placeholder expansion, padding, audio features."""

    def __init__(self, config: ModelConfig, tokenizer, encoder: AudioEncoder,
                 num_tokens: Callable[[torch.Tensor], torch.Tensor], whisper=None, whisper_tokenizer=None):
        """num_tokens: the adapter's tokens per clip from encoder frames (`adapter.num_tokens`);
        whisper, whisper_tokenizer: for transcripts when config.use_transcript."""
        self.config = config
        self.tokenizer = tokenizer
        self.encoder = encoder
        self._num_tokens = num_tokens
        self.whisper, self.whisper_tokenizer = whisper, whisper_tokenizer
        # clips -> (N, 3) probabilities of the voice token's gender head over VOICES (male, female,
        # none); set by SpeechLM for model.voice_line
        self.voice_probabilities: Callable[[list[np.ndarray]], torch.Tensor] | None = None
        if config.placeholder not in tokenizer.get_vocab():
            tokenizer.add_tokens([config.placeholder], special_tokens=True)
        self.placeholder_id = tokenizer.convert_tokens_to_ids(config.placeholder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = tokenizer.pad_token_id
        self.eot_id = find_eot(tokenizer)
        self.stop_ids = sorted({self.eot_id, tokenizer.eos_token_id} - {None})

    def num_audio_tokens(self, num_samples: int) -> int:
        """Audio tokens the adapter emits for a clip of `num_samples` at 16 kHz."""
        frames = self.encoder.output_length(self.encoder.mel_length(num_samples))
        return int(self._num_tokens(torch.tensor([frames]))[0])

    # ---- one example -> prompt ids ------------------------------------------------------------
    def user_message(self, ex: dict, mode: str, transcript: str | None = None, voice: str | None = None) -> str:
        instruction = ex.get("instruction") or ""
        if mode == "text":
            desc = ex.get("description")
            return teacher_user_message(desc, instruction) if desc else instruction
        if ex.get("audio") is None:
            return instruction
        return self._student_message(instruction, self.config.placeholder, transcript, voice)

    def prompt_ids(self, ex: dict, mode: str = "audio", transcript: str | None = None,
                   voice: str | None = None) -> list[int]:
        """Chat-template prompt ids ending with the assistant header; placeholders expanded."""
        ids = self._chat_ids(chat_messages(ex.get("system"), self.user_message(ex, mode, transcript, voice)))
        n_ph = ids.count(self.placeholder_id)
        if mode == "audio" and ex.get("audio") is not None:
            if n_ph != 1:
                raise ConfigError(f"the prompt must hold the placeholder {self.config.placeholder} once, "
                                  f"found {n_ph} times")
            return self._expand(ids, [np.asarray(ex["audio"])])
        if n_ph:
            raise ConfigError(f"placeholder {self.config.placeholder} appears in a text without audio")
        return ids

    def _chat_ids(self, msgs: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _expand(self, ids: list[int], clips: list[np.ndarray]) -> list[int]:
        """Each placeholder -> as many ids as the adapter emits for the next clip, in order."""
        out, k = [], 0
        for i in ids:
            if i == self.placeholder_id:
                out += [i] * self.num_audio_tokens(len(clips[k]))
                k += 1
            else:
                out.append(i)
        return out

    def transcripts(self, examples) -> list[str | None]:
        """Each example's transcript; with use_transcript, Whisper writes the missing ones."""
        out = [ex.get("transcript") for ex in examples]
        if not self.config.use_transcript:
            return out
        todo = [i for i, ex in enumerate(examples) if ex.get("audio") is not None and out[i] is None]
        if todo:
            for i, t in zip(todo, self.transcribe([examples[i]["audio"] for i in todo])):
                out[i] = t
        return out

    def voices(self, examples) -> list[str | None]:
        """Each example's word for the voice line (model.voice_line; None = no line): the
        example's own `voice` when it has that key (training rows: the clip's label), else the
        voice token's gender head's verdict on its audio."""
        if self.config.voice_line is None:
            return [None] * len(examples)
        out = [ex.get("voice") for ex in examples]
        todo = [i for i, ex in enumerate(examples) if ex.get("audio") is not None and "voice" not in ex]
        if todo:
            probs = self._voice_probabilities([examples[i]["audio"] for i in todo])
            for i, p in zip(todo, probs):
                out[i] = voice_word(p)
        return out

    def turn_voice(self, clips: list[list[np.ndarray]]) -> str | None:
        """The voice line's word for a conversation turn's clips (each a list of <= 30 s pieces):
        the gender head's probabilities averaged over every piece; None without voice_line."""
        pieces = [p for clip in clips for p in clip]
        if self.config.voice_line is None or not pieces:
            return None
        return voice_word(self._voice_probabilities(pieces).mean(0))

    def _voice_probabilities(self, clips) -> torch.Tensor:
        if self.voice_probabilities is None:
            raise ConfigError("voice_line needs the voice token's gender head (build with SpeechLM)")
        return self.voice_probabilities(clips)

    def transcribe(self, clips) -> list[str]:
        if self.whisper_tokenizer is None:
            raise ConfigError("use_transcript needs the Whisper tokenizer (build with SpeechLM.build)")
        return transcribe(self.whisper, self.encoder.feature_extractor, self.whisper_tokenizer, clips)

    # ---- examples -> batch --------------------------------------------------------------------
    def collate(self, examples: list[dict], mode: str = "audio",
                padding: Literal["right", "left"] = "right") -> dict:
        """Batch: input_ids, attention_mask, position_ids, labels (+ audio features).

        labels are IGNORE (-100) except the response tokens and the end-of-turn token. When an
        example names `key_words`, the batch also holds `key_mask` (B, S): True at the response
        tokens inside those words (for train.key_word_weight). With
        mode="text" the description takes the audio's place (teacher / text-side rows).
        padding: right for training, left for generation (every prompt ends at the last column).
        """
        if mode not in ("audio", "text"):
            raise ConfigError(f"mode: {mode!r} is not 'audio' or 'text'")
        for i, ex in enumerate(examples):
            _check_example(i, ex)
        transcripts = self.transcripts(examples) if mode == "audio" else [None] * len(examples)
        voices = self.voices(examples) if mode == "audio" else [None] * len(examples)
        seqs, labs, keys = [], [], []
        for ex, tr, voice in zip(examples, transcripts, voices):
            ids = self.prompt_ids(ex, mode, tr, voice)
            lab, key = [IGNORE] * len(ids), [False] * len(ids)
            if ex.get("response") is not None:
                resp, resp_key = self._response_ids(ex["response"], ex.get("key_words"))
                ids, lab, key = ids + resp, lab + resp, key + resp_key
            seqs.append(ids)
            labs.append(lab)
            keys.append(key)
        clips = [ex["audio"] for ex in examples if mode == "audio" and ex.get("audio") is not None]
        rows = [i for i, ex in enumerate(examples) if mode == "audio" and ex.get("audio") is not None]
        keys = keys if any(ex.get("key_words") for ex in examples) else None
        return self._batch(seqs, labs, clips, rows, padding, keys)

    def _response_ids(self, response: str, key_words: list[str] | None) -> tuple[list[int], list[bool]]:
        """A response's token ids + the end-of-turn id, and per token whether it lies in one of
        `key_words` (whole words or phrases, any case; train.key_word_weight scales their loss)."""
        if not key_words:
            ids = self.tokenizer(response, add_special_tokens=False).input_ids
            return ids + [self.eot_id], [False] * (len(ids) + 1)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ConfigError("key words (train.key_word_weight) need a fast tokenizer (tokenizer.json) "
                              "to map words to tokens")
        enc = self.tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
        pattern = r"\b(?:" + "|".join(re.escape(w) for w in sorted(key_words, key=len, reverse=True)) + r")\b"
        spans = [m.span() for m in re.finditer(pattern, response, flags=re.IGNORECASE)]
        key = [any(a < e and s < b for s, e in spans) for a, b in enc["offset_mapping"]]
        return enc.input_ids + [self.eot_id], key + [False]

    def chat_batch(self, messages: list[dict], clips: list[np.ndarray]) -> dict:
        """A one-row generation batch from chat messages whose user turns hold one placeholder per
        audio piece, `clips` being those pieces in order."""
        ids = self._chat_ids(messages)
        if ids.count(self.placeholder_id) != len(clips):
            raise ConfigError(f"the prompt holds {ids.count(self.placeholder_id)} placeholders for "
                              f"{len(clips)} audio pieces (does an instruction contain {self.config.placeholder}?)")
        ids = self._expand(ids, clips)
        return self._batch([ids], [[IGNORE] * len(ids)], clips, [0] * len(clips), "left")

    def user_turn(self, instruction: str, clips: list[list[np.ndarray]], transcript: str | None = None,
                  voice: str | None = None) -> str:
        """A conversation's user message: one placeholder per piece, one line per clip."""
        if not clips:
            return instruction
        slot = "\n".join(self.config.placeholder * len(clip) for clip in clips)
        return self._student_message(instruction, slot, transcript, voice)

    def _student_message(self, instruction: str, slot: str, transcript: str | None, voice: str | None = None) -> str:
        """The speech prompt's user text: `slot` where the audio goes, then the transcript on this
        model's `transcript_line` when it reads one (use_transcript), the voice on its
        `voice_line` when it has one, then the instruction."""
        return student_user_message(instruction, slot, transcript if self.config.use_transcript else None,
                                    self.config.transcript_line, voice, self.config.voice_line)

    def _batch(self, seqs, labs, clips, rows, padding: str, keys=None) -> dict:
        b, s = len(seqs), max(len(x) for x in seqs)
        input_ids = torch.full((b, s), self.pad_id, dtype=torch.long)
        labels = torch.full((b, s), IGNORE, dtype=torch.long)
        attn = torch.zeros((b, s), dtype=torch.long)
        key_mask = torch.zeros((b, s), dtype=torch.bool) if keys is not None else None
        for i, (ids, lab) in enumerate(zip(seqs, labs)):
            cols = slice(0, len(ids)) if padding == "right" else slice(s - len(ids), s)
            input_ids[i, cols] = torch.tensor(ids)
            labels[i, cols] = torch.tensor(lab)
            attn[i, cols] = 1
            if key_mask is not None:
                key_mask[i, cols] = torch.tensor(keys[i], dtype=torch.bool)
        batch = {"input_ids": input_ids, "attention_mask": attn,
                 "position_ids": (attn.cumsum(-1) - 1).clamp(min=0), "labels": labels}
        if key_mask is not None:
            batch["key_mask"] = key_mask
        if clips:
            feats, mel_lengths = self.encoder.features(clips)  # (A, n_mels, F), (A,)
            batch.update(input_features=feats, mel_lengths=mel_lengths,
                         audio_rows=torch.tensor(rows, dtype=torch.long))
        return batch

    # ---- ids -> text --------------------------------------------------------------------------
    def decode(self, rows: list[list[int]]) -> tuple[list[str], list[str]]:
        """Generated ids per row -> (texts, stops): each text cut at its first stop token; stop
        "eos" where one ended the row, "length" where none did."""
        texts, stops = [], []
        for row in rows:
            cut = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
            stops.append("length" if cut is None else "eos")
            texts.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        return texts, stops

    def stream_text(self, tokens: Iterable[int], out: list[int]) -> Iterator[str]:
        """Text deltas of a one-row token stream, up to its first stop token; the ids go to `out`.
        A delta waits for the rest of a multi-byte character."""
        shown = ""
        for t in tokens:
            if t in self.stop_ids:
                break
            out.append(t)
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            if not text.endswith("\ufffd"):
                yield text[len(shown):]
                shown = text
        full = self.tokenizer.decode(out, skip_special_tokens=True)
        if len(full.strip()) > len(shown.strip()):
            yield full[len(shown):]


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
