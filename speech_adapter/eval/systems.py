"""How a `SpeechLM` answers eval rows in each mode, including the cascade baseline.

- "speech": the speech model hears the audio and reads the instruction;
- "text_retention": the speech model (LoRA on) reads the description + instruction, no audio;
- "text_ceiling": the bare backbone reads the description + instruction (DeSTA2's ceiling);
- "cascade": Whisper's own greedy transcript of the clip, then the bare backbone reads it +
  the instruction: the ASR → LLM pipeline a speech LLM has to beat (Speech-IFEval and
  Dynamic-SUPERB report the same baseline).

The last two are plain text prompts to the frozen LLM, independent of the adapter. On a CPU they
go through CTranslate2 (`data_prep.teacher_ct2`: same chat template, greedy, same stop tokens)
when it can convert the backbone, else through `SpeechLM.generate` with LoRA off.
Each reply comes back as `{"output", "stop"}` (stop: "eos" or "length"), cascade ones with the
transcript used (`"asr"`).
"""

from __future__ import annotations

import contextlib
import sys

from data_prep.teacher_ct2 import CTranslate2Teacher
from speech_adapter.audio import load_audio
from speech_adapter.errors import ConfigError, DataError
from speech_adapter.eval.runner import MODES, GenerateFn
from speech_adapter.paths import resolve_model
from speech_adapter.prompts import (DEFAULT_SYSTEM_PROMPT, REPETITION_PENALTY, cascade_user_message, chat_messages,
                                    teacher_messages, teacher_user_message)

TEXT_BACKENDS = ("auto", "ctranslate2", "transformers")


def transcribe_clips(speechlm, waveforms: list, batch_size: int = 8) -> list[str]:
    """Greedy transcripts from the speech model's own Whisper (the cascade's ASR)."""
    from speech_adapter.models.encoder import transcribe  # lazy: torch

    wtok = speechlm.processor.whisper_tokenizer
    if wtok is None:
        raise ConfigError("the cascade mode needs the Whisper tokenizer (load with SpeechLM.from_pretrained/build)")
    return transcribe(speechlm.whisper, speechlm.encoder.feature_extractor, wtok, waveforms, batch_size=batch_size)


def ct2_backbone(speechlm, batch_size: int = 8):
    """A CTranslate2 generator of the speech model's frozen LLM (converted once, cached).

    Raises ConfigError when the backbone has no Hugging Face dir to convert (tiny pairs, GGUF
    files), ImportError without `ctranslate2`."""
    ref = str(speechlm.config.llm)
    if ref.startswith("tiny:") or ref.endswith(".gguf"):
        raise ConfigError(f"llm {ref!r}: CTranslate2 converts a model dir; this backbone has none")

    return CTranslate2Teacher(resolve_model(ref), ref, compute_type="float32", batch_size=batch_size)


class BackboneText:
    """Greedy replies of the bare backbone to chat messages: CTranslate2 or `SpeechLM.generate`.

    backend "auto": CTranslate2 when the model runs on a CPU and the backbone converts, else
    transformers (said once on stderr); "ctranslate2": CTranslate2 or an error; "transformers".
    """

    def __init__(self, speechlm, backend: str = "auto", batch_size: int = 8,
                 repetition_penalty: float = REPETITION_PENALTY):
        if backend not in TEXT_BACKENDS:
            raise ConfigError(f"text backend {backend!r} is not one of {list(TEXT_BACKENDS)}")
        self.speechlm, self.backend, self.batch_size = speechlm, backend, batch_size
        self.repetition_penalty = repetition_penalty
        self._ct2 = None

    def _ct2_or_none(self):
        if self._ct2 is None and self.backend != "transformers":
            if self.repetition_penalty != 1.0:
                # CTranslate2's penalty is its own (its replies differ from SpeechLM.stream's, which
                # penalizes the reply's tokens only): every system must decode alike
                if self.backend == "ctranslate2":
                    raise ConfigError(f"text backend ctranslate2 decodes without SpeechLM's repetition penalty "
                                      f"({self.repetition_penalty}); use repetition_penalty 1 or text_backend transformers")
                self.backend = "transformers"
                return None
            if self.backend == "auto" and getattr(getattr(self.speechlm, "device", None), "type", "cpu") != "cpu":
                self.backend = "transformers"  # on an accelerator the model's own path is faster
                return None
            try:
                self._ct2 = ct2_backbone(self.speechlm, self.batch_size)
            except (ImportError, ConfigError, OSError, RuntimeError, ValueError) as e:
                if self.backend == "ctranslate2":
                    raise
                print(f"eval: text-only modes through transformers (CTranslate2 unavailable: "
                      f"{str(e).splitlines()[0][:160]})", file=sys.stderr)
                self.backend = "transformers"
        return self._ct2

    def stop_ids(self) -> list[int]:
        """The stop set `SpeechLM.generate` uses, so both backends end replies alike."""
        lm = self.speechlm
        return sorted({lm.eot_id, lm.tokenizer.eos_token_id} - {None})

    def __call__(self, messages: list[list[dict]], max_new_tokens: int) -> list[tuple[str, str]]:
        ct2 = self._ct2_or_none()
        if ct2 is not None:
            return ct2.generate_greedy([ct2.format(m) for m in messages], max_new_tokens, self.stop_ids())
        examples = []
        for msgs in messages:
            system = next((m["content"] for m in msgs if m["role"] == "system"), None)
            user = next(m["content"] for m in msgs if m["role"] == "user")
            examples.append({"audio": None, "instruction": user, "response": None, "system": system,
                             "transcript": None, "description": None})
        disable = getattr(self.speechlm.llm, "disable_adapter", None)  # LoRA off: the bare backbone
        out: list[tuple[str, str]] = []
        with (disable() if disable is not None else contextlib.nullcontext()):
            for i in range(0, len(examples), self.batch_size):
                texts, stops = self.speechlm.generate(examples[i:i + self.batch_size], max_new_tokens=max_new_tokens,
                                                      return_stop=True, repetition_penalty=self.repetition_penalty)
                out += zip(texts, stops)
        return out


def speechlm_generate_fn(speechlm, mode: str | None = None, max_new_tokens: int = 128,
                         batch_size: int = 8, system: str | None = "default",
                         text_backend: str = "auto", repetition_penalty: float = REPETITION_PENALTY) -> GenerateFn:
    """A `generate(rows, mode)` for a `SpeechLM` (docs/CONTRACTS.md example dicts).

    `mode`, when given, fixes the mode whatever the runner asks. `system="default"` uses
    prompts.DEFAULT_SYSTEM_PROMPT, the one distillation and training use (None: the chat
    template's own default). `text_backend` routes text_ceiling and cascade (see `BackboneText`);
    `repetition_penalty` applies to every mode alike (`SpeechLM.stream`).
    Cascade transcripts, and the speech mode's of a `use_transcript` model, are the suite's
    `asr_transcript` (from `data transcribe`) where present, else decoded by the model's own
    Whisper once per clip for both modes (a clip is asked many questions).
    """
    if system == "default":  # the system prompt distillation and training used
        system = DEFAULT_SYSTEM_PROMPT
    backbone = BackboneText(speechlm, text_backend, batch_size, repetition_penalty)
    transcripts: dict[str, str] = {}
    reads_transcript = bool(getattr(getattr(speechlm, "config", None), "use_transcript", False))

    def description(r, m):
        if not r.get("description"):
            raise DataError(f"row {r['id']}: mode {m} needs a description")
        return r["description"]

    def transcribe_rows(rows):
        for r in rows:  # `data transcribe` already wrote the same Whisper's transcript into the suite
            if r.get("audio") and r.get("asr_transcript") is not None:
                transcripts.setdefault(str(r["audio"]), str(r["asr_transcript"]).strip())
        todo = sorted({str(r["audio"]) for r in rows if r.get("audio")} - set(transcripts))
        if todo:
            texts = transcribe_clips(speechlm, [load_audio(a) for a in todo], batch_size)
            transcripts.update(zip(todo, (t.strip() for t in texts)))
        missing = [r["id"] for r in rows if not r.get("audio")]
        if missing:
            raise DataError(f"row {missing[0]}: mode cascade needs audio")
        return [transcripts[str(r["audio"])] for r in rows]

    def generate(rows: list[dict], run_mode: str) -> list[dict]:
        m = mode or run_mode
        if m not in MODES:
            raise DataError(f"mode {m!r} is not one of {list(MODES)}")
        if m == "cascade":
            asr = transcribe_rows(rows)
            replies = backbone([chat_messages(system, cascade_user_message(t, r["instruction"])) for t, r in zip(asr, rows)],
                               max_new_tokens)
            return [{"output": text, "stop": stop, "asr": t} for (text, stop), t in zip(replies, asr)]
        if m == "text_ceiling":
            replies = backbone([teacher_messages(description(r, m), r["instruction"], system) for r in rows], max_new_tokens)
            return [{"output": text, "stop": stop} for text, stop in replies]
        out = []
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            if m == "speech":
                # Whisper's transcript from `data transcribe` where the suite has it, else the
                # model's own Whisper once per clip, shared with cascade: never the ground truth
                asr = transcribe_rows(chunk) if reads_transcript else [None] * len(chunk)
                exs = [{"audio": load_audio(r["audio"]), "instruction": r["instruction"], "transcript": t}
                       for r, t in zip(chunk, asr)]
            else:  # text_retention: the speech model, LoRA on, reading the description
                exs = [{"audio": None, "instruction": teacher_user_message(description(r, m), r["instruction"]),
                        "transcript": None} for r in chunk]
            exs = [dict(e, response=None, system=system, description=None) for e in exs]
            texts, stops = speechlm.generate(exs, max_new_tokens=max_new_tokens, return_stop=True,
                                             repetition_penalty=repetition_penalty)
            out += [{"output": text, "stop": stop} for text, stop in zip(texts, stops)]
        return out

    return generate
