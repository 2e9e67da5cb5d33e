"""Python API: load a model with checks, ask about a clip, multi-turn conversations, streaming.

`load` is `SpeechLM.from_pretrained` (peft's one convention; the adapter dir's format and checks
live in `models.adapter_dir`). A conversation's prompt comes from the model's processor (one
placeholder per <= 30 s piece of each clip, see `models.processor`) and its reply from the
model's `stream`.
"""

from __future__ import annotations

from typing import Iterator

from speech_adapter.models.processor import audio_pieces
from speech_adapter.models.speechlm import SpeechLM
from speech_adapter.prompts import DEFAULT_SYSTEM_PROMPT, REPETITION_PENALTY

USE_DEFAULT = object()  # system prompt sentinel: the one recorded in the export


def load(directory, **kwargs) -> SpeechLM:
    """A SpeechLM from an export / adapter / run dir, checked (see `SpeechLM.from_pretrained`;
    kwargs: ignore_mismatch, trust_remote_code, encoder, llm, dtype)."""
    return SpeechLM.from_pretrained(directory, **kwargs)


class Conversation:
    """Multi-turn chat with audio: `add_audio` clips, then `ask` / `stream` an instruction.

    Every turn re-encodes the whole history (no cross-turn KV cache): simple and exact.
    """

    def __init__(self, model, system=USE_DEFAULT):
        self.model = model
        self.system = DEFAULT_SYSTEM_PROMPT if system is USE_DEFAULT else system
        self.reset()

    def reset(self) -> None:
        self.turns: list[dict] = []  # {"role", "instruction"|"content", "clips": [[piece, ...], ...]}
        self.pending: list[list] = []

    def add_audio(self, audio) -> int:
        """Queue a clip (path or array) for the next user turn; returns its number of pieces."""
        pieces = audio_pieces(audio)
        self.pending.append(pieces)
        return len(pieces)

    def transcribe(self, clips: list[list]) -> str | None:
        """Whisper's transcript of a turn's clips (use_transcript), else None."""
        if not self.model.config.use_transcript or not clips:
            return None
        return " ".join(t.strip() for t in self.model.processor.transcribe([p for clip in clips for p in clip]))

    def user_record(self, instruction: str, clips: list[list]) -> dict:
        """A user turn's history record: its instruction, clips, Whisper's transcript and voice verdict."""
        return {"role": "user", "instruction": instruction, "clips": clips,
                "transcript": self.transcribe(clips), "voice": self.model.processor.turn_voice(clips)}

    def _batch(self) -> dict:
        """The one-row generation batch of the whole conversation."""
        proc = self.model.processor
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        pieces = []
        for t in self.turns:
            if t["role"] == "user":
                content = proc.user_turn(t["instruction"], t["clips"], t["transcript"], t.get("voice"))
                msgs.append({"role": "user", "content": content})
                pieces += [p for clip in t["clips"] for p in clip]
            else:
                msgs.append({"role": "assistant", "content": t["content"]})
        return proc.chat_batch(msgs, pieces)

    def stream(self, instruction: str, max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 1.0, seed: int | None = None,
               repetition_penalty: float = REPETITION_PENALTY) -> Iterator[str]:
        """Yield the reply's text as it is generated (greedy when temperature is 0).

        The user turn (with the queued clips) and the finished reply join the history at the end.
        """
        m = self.model
        clips = self.pending
        self.turns.append(self.user_record(instruction, clips))
        try:
            batch = self._batch()
        except Exception:
            self.turns.pop()
            raise
        self.pending = []
        tokens = (int(t) for t in m.stream(batch, max_new_tokens, temperature > 0, temperature, top_p, seed,
                                           repetition_penalty))
        out: list[int] = []
        yield from m.processor.stream_text(tokens, out)
        self.turns.append({"role": "assistant", "content": m.tokenizer.decode(out, skip_special_tokens=True).strip()})

    def ask(self, instruction: str, **gen) -> str:
        """The whole reply to `instruction` (see `stream` for the options)."""
        "".join(self.stream(instruction, **gen))
        return self.turns[-1]["content"]


def ask(model, audio, instruction: str, system=USE_DEFAULT, **gen) -> str:
    """One question about one clip (path or 16 kHz float array; long audio is chunked).

    gen: max_new_tokens, temperature (0 = greedy), top_p, seed, repetition_penalty (1 = none).
    """
    conv = Conversation(model, system=system)
    if audio is not None:
        conv.add_audio(audio)
    return conv.ask(instruction, **gen)


__all__ = ["load", "ask", "Conversation", "audio_pieces", "USE_DEFAULT"]
