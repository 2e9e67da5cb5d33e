"""The teacher: the frozen backbone LLM answering text prompts, for self-distillation targets.

DeSTA2 (Lu et al., 2024) and DeSTA2.5-Audio generate training targets with the *same* LLM the
speech model is built on, reading a text description of the audio. This module hides how that
LLM is run behind one interface:

    teacher.generate(prompts: list[list[message]], n, sampling, seeds=None) -> list[list[str]]
    teacher.score(prompts, replies: list[list[str]]) -> list[list[float]]   # log-likelihoods

Backends:
- `transformers` (default): batched `generate` with left padding, stopping at end of turn.
  Sampling is seeded *per prompt* (Gumbel-max noise from a per-row generator), so a row gets the
  same samples whatever batch it lands in — a resumed run reproduces an uninterrupted one.
- `vllm` (optional extra `pip install speech-adapter[vllm]`): imported lazily; per-request seeds.
- `fake:SCRIPT.json`: scripted answers for tests and dry runs (no model at all).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Literal, Protocol, get_args

from speech_adapter.config import help_field
from speech_adapter.errors import ConfigError, ModelNotFoundError
from speech_adapter.paths import OFFLINE_LLM

Backend = Literal["transformers", "ctranslate2", "vllm"]
BACKENDS = get_args(Backend)
# End-of-turn markers of common chat templates; whichever the tokenizer knows also stops generation.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclasses.dataclass
class Sampling:
    """How one generation call decodes. `do_sample=False` is greedy (temperature/top_p unused)."""

    do_sample: bool = help_field(False, "sample (True) or greedy decoding (False)")
    temperature: float = help_field(0.7, "sampling temperature; try 0.5-1.0 for diverse retries")
    top_p: float = help_field(0.9, "nucleus sampling mass kept")
    max_new_tokens: int = help_field(160, "longest answer in tokens; longer answers are cut")
    seed: int = help_field(0, "base seed; each prompt's samples are seeded from it and the prompt's seed")

    def record(self) -> dict:
        """What a distilled row stores about how its answer was decoded."""
        if not self.do_sample:
            return {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TeacherConfig:
    """Which LLM answers and how it is run."""

    model: str = help_field(OFFLINE_LLM,
                            "backbone: offline:NAME, a local model dir, a .gguf file, or fake:SCRIPT.json")
    backend: Backend = help_field("transformers", "transformers | ctranslate2 (fast on CPU) | vllm (GPU)")
    dtype: str = help_field("float32", "float32 | bfloat16 | float16 | int8 (ctranslate2 only); fp32 is exact on CPU")
    batch_size: int = help_field(8, "prompts per generate call")

    def validate(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: {self.backend!r} is not one of {list(BACKENDS)}")
        dtypes = ("float32", "bfloat16", "float16") + (("int8",) if self.backend == "ctranslate2" else ())
        if self.dtype not in dtypes:
            raise ConfigError(f"dtype: {self.dtype!r} is not one of {list(dtypes)} for backend {self.backend}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")


class Teacher(Protocol):
    model_id: str

    def generate(self, prompts: list[list[dict]], n: int = 1, sampling: Sampling | None = None,
                 seeds: list[int] | None = None) -> list[list[str]]:
        """`n` answers per chat prompt (a list of {"role", "content"} messages)."""

    def generate_raw(self, texts: list[str], n: int = 1, sampling: Sampling | None = None,
                     seeds: list[int] | None = None) -> list[list[str]]:
        """`n` continuations per raw text prompt (already chat-formatted)."""

    def score(self, prompts: list[list[dict]], replies: list[list[str]]) -> list[list[float]]:
        """The log-likelihood (summed over its tokens) of each candidate reply to each chat prompt:
        the teacher's ranking of given answers, as multiple-choice evals rank options."""


def stable_seed(*parts) -> int:
    """A 31-bit seed from any parts (row id, template id, ...), stable across runs and machines."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _gumbel_processor(temperature: float, top_p: float, seeds: list[int]):
    """A logits processor that turns greedy search into seeded per-row sampling.

    argmax(logits / T + Gumbel noise) is a sample from softmax(logits / T) (Gumbel-max trick);
    drawing the noise from one generator per row makes each row's samples independent of the
    batch it is in.
    """
    import torch
    from transformers import LogitsProcessor

    class GumbelSampling(LogitsProcessor):
        def __init__(self):
            self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def __call__(self, input_ids, scores):  # scores: B, V
            scores = scores.float() / max(temperature, 1e-5)
            if top_p < 1.0:
                sorted_scores, order = torch.sort(scores, descending=True, dim=-1)  # B, V
                cum = sorted_scores.softmax(-1).cumsum(-1)
                drop_sorted = cum - sorted_scores.softmax(-1) > top_p  # keep the token that crosses top_p
                drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
                scores = scores.masked_fill(drop, float("-inf"))
            u = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])  # B, V
            exp_noise = -torch.log(u.clamp_min(1e-10))  # Exp(1) draws, > 0
            gumbel = -torch.log(exp_noise.clamp_min(1e-10))
            return scores + gumbel.to(scores.device)

    return GumbelSampling()


def stop_token_ids(tokenizer) -> list[int]:
    """The ids that end a reply: the tokenizer's EOS and whichever end-of-turn markers it knows."""
    vocab = tokenizer.get_vocab()
    stops = {tokenizer.eos_token_id} | {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    return sorted(i for i in stops if i is not None)


class _ChatTemplateTeacher:
    """What both real backends share: prompts are chat messages formatted by the tokenizer's
    own chat template; subclasses implement `generate_raw(texts, n, sampling, seeds)`."""

    tokenizer = None

    def format(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The chat-formatted text of `messages` (generation prompt appended)."""
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def generate(self, prompts, n=1, sampling=None, seeds=None):
        return self.generate_raw([self.format(m) for m in prompts], n, sampling, seeds)

    def score(self, prompts, replies):
        return self.score_raw([self.format(m) for m in prompts], replies)


class TransformersTeacher(_ChatTemplateTeacher):
    """Batched `transformers` generation with left padding; stops at end of turn."""

    def __init__(self, model, tokenizer, model_id: str, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = batch_size
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.stop_ids = stop_token_ids(tokenizer)

    def generate_raw(self, texts, n=1, sampling=None, seeds=None):
        import torch

        sampling = sampling or Sampling()
        if n > 1 and not sampling.do_sample:
            raise ValueError("greedy decoding gives one answer; use do_sample=True for n > 1")
        seeds = list(seeds) if seeds is not None else list(range(len(texts)))
        # one job per (prompt, sample); each sample has its own seed
        jobs = [(i, j, texts[i], stable_seed(sampling.seed, seeds[i], j))
                for i in range(len(texts)) for j in range(n)]
        out: list[list[str]] = [[""] * n for _ in texts]
        tok = self.tokenizer
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            for start in range(0, len(jobs), self.batch_size):
                batch = jobs[start:start + self.batch_size]
                enc = tok([b[2] for b in batch], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(self.model.device)
                kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=False,
                              eos_token_id=self.stop_ids, pad_token_id=tok.pad_token_id)
                if sampling.do_sample:
                    kwargs["logits_processor"] = [
                        _gumbel_processor(sampling.temperature, sampling.top_p, [b[3] for b in batch])]
                with torch.inference_mode():
                    gen = self.model.generate(**enc, **kwargs, temperature=None, top_p=None, top_k=None)
                new = gen[:, enc["input_ids"].shape[1]:]  # B, T_new (left padding: prompts end together)
                for (i, j, _, _), ids in zip(batch, new):
                    out[i][j] = tok.decode(ids, skip_special_tokens=True).strip()
        finally:
            tok.padding_side = side
        return out

    def score_raw(self, texts: list[str], replies: list[list[str]]) -> list[list[float]]:
        """Summed log-probabilities of each reply's tokens after its (chat-formatted) text.

        Each text runs once (left-padded batch, only its last position's logits kept); its KV
        cache is then repeated once per reply and the replies run on it, so scoring k options
        costs about one prompt, not k."""
        import torch
        from transformers import DynamicCache

        tok = self.tokenizer
        dev = self.model.device
        out = [[0.0] * len(r) for r in replies]
        for start in range(0, len(texts), self.batch_size):
            prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[start:start + self.batch_size]]
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for k, p in enumerate(prompts):
                ids[k, width - len(p):] = torch.tensor(p)
                mask[k, width - len(p):] = 1
            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                res = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                                 position_ids=(mask.cumsum(-1) - 1).clamp_min(0).to(dev),
                                 cache=cache, use_cache=True, logits_to_keep=1)
            first = res.logits[:, -1].float().log_softmax(-1)  # B, V: each reply's first token
            jobs = []  # (prompt row in batch, reply index, reply ids)
            for k in range(len(prompts)):
                for j, reply in enumerate(replies[start + k]):
                    rids = tok(reply, add_special_tokens=False)["input_ids"]
                    if not rids:
                        raise ValueError(f"empty reply {reply!r} cannot be scored")
                    jobs.append((k, j, rids))
            if not jobs:
                continue
            rest = max(len(r) for _, _, r in jobs) - 1  # reply tokens after the first
            logp = None
            if rest:
                rows = torch.tensor([k for k, _, _ in jobs], device=dev)
                cache.reorder_cache(rows)  # one copy of its prompt's cache per reply
                step = torch.full((len(jobs), rest), tok.pad_token_id, dtype=torch.long)
                step_mask = torch.zeros_like(step)
                for n, (_, _, r) in enumerate(jobs):
                    step[n, :len(r) - 1] = torch.tensor(r[:-1])
                    step_mask[n, :len(r) - 1] = 1
                lengths = mask.sum(-1).to(dev)[rows]
                with torch.inference_mode():
                    logits = self.model(
                        input_ids=step.to(dev), cache=cache,
                        attention_mask=torch.cat([mask.to(dev)[rows], step_mask.to(dev)], dim=1),
                        position_ids=lengths[:, None] + torch.arange(rest, device=dev)[None, :]).logits
                logp = logits.float().log_softmax(-1)  # jobs, rest, V: predicts reply tokens 2..n
            for n, (k, j, r) in enumerate(jobs):
                total = first[k, r[0]]
                if len(r) > 1:
                    total = total + logp[n, torch.arange(len(r) - 1), torch.tensor(r[1:], device=dev)].sum()
                out[start + k][j] = float(total)
        return out


class VllmTeacher(_ChatTemplateTeacher):
    """vLLM generation for scale; installed with the `vllm` extra."""

    def __init__(self, model_path: str, model_id: str, dtype: str = "bfloat16"):
        try:
            from vllm import LLM
        except ImportError:
            raise ConfigError("teacher.backend 'vllm' needs vLLM: pip install 'speech-adapter[vllm]' "
                              "(or use backend: transformers)") from None
        self.llm = LLM(model=str(model_path), dtype=dtype, trust_remote_code=False)
        self.tokenizer = self.llm.get_tokenizer()
        self.model_id = model_id

    def generate_raw(self, texts, n=1, sampling=None, seeds=None):
        from vllm import SamplingParams

        sampling = sampling or Sampling()
        seeds = list(seeds) if seeds is not None else list(range(len(texts)))
        params = [SamplingParams(
            n=n, max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature if sampling.do_sample else 0.0,
            top_p=sampling.top_p if sampling.do_sample else 1.0,
            seed=stable_seed(sampling.seed, s)) for s in seeds]
        results = self.llm.generate(texts, params, use_tqdm=False)
        return [[o.text.strip() for o in r.outputs] for r in results]

    def score_raw(self, texts, replies):
        raise ConfigError("distill.option_answers 'choice' scores replies with the transformers "
                          "backend only; use teacher backend: transformers for it")


class FakeTeacher:
    """Scripted answers, for tests and dry runs of the pipeline without a model.

    Script (JSON): {"rules": [{"contains": "gender", "answers": ["a", "b"]}], "default": "...",
    "delay_s": 0.0}. The first rule whose `contains` occurs in the prompt text answers; its
    `answers` are handed out in order per prompt text (its first request gets answers[0], the
    next answers[1], ...), the last one repeating.
    """

    model_id = "fake"

    def __init__(self, script: dict):
        self.rules = script.get("rules", [])
        self.default = script.get("default", "I hear a person speaking.")
        self.delay_s = float(script.get("delay_s", 0.0))
        self.calls: list[tuple[str, int, bool]] = []  # (text, n, do_sample), for tests
        self._served: dict[str, int] = {}  # answers already handed out per prompt text

    @classmethod
    def from_file(cls, path) -> "FakeTeacher":
        try:
            return cls(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise ConfigError(f"teacher.model fake:{path}: cannot read the script ({e})") from None

    def format(self, messages, add_generation_prompt=True):
        return "\n".join(f"<{m['role']}>{m['content']}" for m in messages) + (
            "\n<assistant>" if add_generation_prompt else "")

    def generate(self, prompts, n=1, sampling=None, seeds=None):
        return self.generate_raw([self.format(m) for m in prompts], n, sampling, seeds)

    def score(self, prompts, replies):
        """A reply scores how often its rarest word occurs (whole word) in the prompt text, words
        every option shares ("The speaker is ...") aside: the fake "prefers" the option its
        prompt's description names ("male" never matches "female")."""
        import re

        out = []
        for messages, options in zip(prompts, replies):
            text = self.format(messages).lower()
            words = [re.findall(r"\w+", r.lower()) for r in options]
            shared = set.intersection(*map(set, words)) if len(words) > 1 else set()
            out.append([float(min(len(re.findall(rf"\b{re.escape(w)}\b", text)) for w in ([w for w in ws if w not in shared] or ws)))
                        for ws in words])
        return out

    def generate_raw(self, texts, n=1, sampling=None, seeds=None):
        sampling = sampling or Sampling()
        out = []
        for text in texts:
            self.calls.append((text, n, sampling.do_sample))
            answers = [self.default]
            for rule in self.rules:
                if rule["contains"] in text:
                    answers = rule["answers"]
                    break
            first = self._served.get(text, 0)
            self._served[text] = first + n
            out.append([answers[min(first + j, len(answers) - 1)] for j in range(n)])
            if self.delay_s:
                time.sleep(self.delay_s)
        return out
