"""`DistillConfig`: every setting of `data distill`, validated naming the key."""

from __future__ import annotations

import dataclasses
from typing import Literal

from data_prep.teacher import Backend, Sampling, TeacherConfig
from speech_adapter.config import did_you_mean, help_field
from speech_adapter.errors import ConfigError
from speech_adapter.eval.scoring import OPTION_SWAPS
from speech_adapter.paths import OFFLINE_LLM
from speech_adapter.templates import TASKS, TEMPLATES


@dataclasses.dataclass
class DistillConfig:
    """`data distill`: teacher answers to (description + instruction), filtered by SSR."""

    input: str = help_field("", "described JSONL (corpus rows + description)")
    output: str = help_field("", "distilled JSONL; rejects.jsonl and distill_stats.json go beside it")
    # what to ask
    describe_per_clip: int = help_field(1, "instructions per clip from the 'What can you hear?' family")
    templates_per_clip: int = help_field(3, "further instructions per clip from the task pool")
    tasks: list[str] = help_field(default_factory=list,
                                  help="pool tasks to sample from (empty = every task the row supports)")
    task_weights: list[float] = help_field(default_factory=list,
                                           help="sampling weight per entry of `tasks` (empty = equal)")
    nonspeech_task_weights: list[float] = help_field(
        default_factory=list, help="sampling weight per entry of `tasks` for clips without speech (empty = "
        "task_weights). Such a clip supports few tasks (speech, sound, duration ...), so a weight "
        "that makes the speech question common on spoken clips makes it most of a silent clip's "
        "questions (the standard's yes/no rows: 57 'yes', 60 'no'). Lowering it there to even them "
        "out made the standard worse at telling speech from non-speech (docs/RESULTS_HISTORY.md, session 17)")
    templates: list[str] = help_field(
        default_factory=list, help="only these seen template ids for the pool tasks, e.g. [gender.01] "
        "(empty = every seen template); a short run learns faster from one phrasing per task")
    constrained_fraction: float = help_field(0.4, "chance a pool instruction is format-constrained")
    bare_fraction: float = help_field(
        0.0, "chance a plain classification question is asked without its option list "
        "('What is the gender of the speaker?', id <template>:bare); the eval suite has its own "
        "bare_fraction")
    bare_tasks: list[str] = help_field(
        default_factory=list, help="pool tasks whose plain questions are always asked bare, e.g. "
        "gender,speech: Qwen2.5-0.5B answers a listed-options gender or yes/no question with a "
        "fixed option whatever the description says, so SSR would drop most of those rows")
    option_answers: Literal["free", "choice"] = help_field(
        "free", "classification answers: free (the teacher's generated answer) | choice (the option "
        "the clip's description makes likeliest in the teacher's scoring, as a one-word reply "
        "'Female.': label first; where that choice is wrong, the option its accepted generated "
        "answer names)")
    choice_tasks: list[str] = help_field(
        default_factory=list, help="pool tasks whose option questions take the teacher's scored choice "
        "(what `option_answers: choice` does for every task), e.g. speech: Qwen2.5-0.5B answers 'Choose from: yes, no.' with 'No.' for spoken clips "
        "whatever the description says, while its scored choice is right, so the adapter gets "
        "listed-options rows to learn from")
    label_fallback_tasks: list[str] = help_field(
        default_factory=list, help="scored-choice tasks whose rows, where the teacher's scored choice and "
        "its generated answers are all wrong, take the clip's label in the same one-word form ('Yes.') "
        "instead of being dropped, e.g. speech: Qwen2.5-0.5B's scored choice was wrong on 35 of 92 "
        "yes/no rows of spoken training clips (session 18), so the kept rows leaned 'No' and the model answered 'No.' to "
        "spoken real clips. gender answered free (not a scored choice) falls back on the teacher's last answer "
        "with its gender words swapped ('The male speaker is talking.' -> 'The female ...'): it answered the "
        "bare 'Who is talking here, a male or a female speaker?' 'male' for all 23 women, so SSR kept 29 men "
        "and no women for it and the model learned 'this phrasing means male' (docs/RESULTS_HISTORY.md, session 23)")
    choice_replies: Literal["word", "sentence"] = help_field(
        "word", "the form of a scored choice's reply: word ('Female.', label first) | sentence ('The "
        "speaker is female.' for the attributes of a speaker: gender, pitch, speed, accent, language; "
        "other tasks keep the word). Many one-word gender targets leaked into other tasks' replies "
        "('Write down exactly what is said.' -> 'Female.', docs/RESULTS_HISTORY.md, session 13)")
    transcript_answers: bool = help_field(
        False, "transcription questions asked without a format rule take the transcript the "
        "teacher's description holds as their answer, instead of the teacher's generated one: "
        "Qwen2.5-0.5B answers 'Transcribe the audio.' with 'Please provide me with the audio' or "
        "recites its description, so SSR kept 0 of 18 such rows and nothing anchored transcription "
        "requests (docs/RESULTS_HISTORY.md, session 14). Rows under a format rule still go to the teacher")
    balance_tasks: list[str] = help_field(
        default_factory=list, help="classification tasks whose kept rows are balanced per template "
        "once distillation is complete, e.g. gender: each phrasing keeps as many rows of each option "
        "as of its rarest (a phrasing the teacher only got right for men would teach 'this phrasing "
        "means male'); the dropped rows go to rejects.jsonl")
    seed: int = help_field(0, "seed of template choice and of the sampled retries")
    limit: int = help_field(0, "distill at most this many clips (0 = all)")
    # SSR
    attempts: int = help_field(4, "k: answers tried per checkable row (1 greedy + k-1 samples)")
    max_words: int = help_field(120, "reject answers longer than this (truncated or rambling)")
    min_overlap: float = help_field(0.6, "content_qa: share of transcript words the answer must hold")
    max_wer: float = help_field(0.2, "transcription: highest WER against the transcript")
    open_min_grounding: float = help_field(
        0.3, "open rows (describe): share of transcript words to mention, unless the answer names the speaker's gender")
    allow_contradictions: bool = help_field(False, "keep answers naming the wrong gender/accent")
    # teacher
    model: str = help_field(OFFLINE_LLM,
                            "teacher LLM: offline:NAME, model dir, .gguf file (fake:SCRIPT.json in tests)")
    backend: Backend = help_field("transformers", "transformers | ctranslate2 (fast on CPU) | vllm (GPU)")
    dtype: str = help_field("float32", "teacher dtype (fp32 is fastest on CPU)")
    batch_size: int = help_field(8, "prompts per teacher generate call")
    max_new_tokens: int = help_field(160, "longest teacher answer in tokens")
    temperature: float = help_field(0.7, "temperature of the sampled retries")
    top_p: float = help_field(0.9, "top-p of the sampled retries")
    prompt_style: Literal["listener", "naive"] = help_field("listener", "teacher prompt: listener (rewritten seed) | naive (raw seed)")
    no_system_prompt: bool = help_field(False, "omit prompts.DEFAULT_SYSTEM_PROMPT (the model's default applies)")
    quiet: bool = help_field(False, "no progress bar")

    def validate(self):
        if not self.input or not self.output:
            raise ConfigError("input and output: both are required")
        for name in ("describe_per_clip", "templates_per_clip", "limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0")
        if self.attempts < 1:
            raise ConfigError("attempts: must be >= 1")
        if not 0.0 <= self.constrained_fraction <= 1.0:
            raise ConfigError("constrained_fraction: must be in [0, 1]")
        bare = {t for tpl in TEMPLATES if tpl.bare for t in [tpl.task]}  # tasks with an option list to leave out
        option = {t for t, task in TASKS.items() if task.metric == "option"}  # tasks with options to choose from
        for key, allowed, missing in (("tasks", TASKS, ""), ("bare_tasks", bare, "no option list to leave out"),
                                      ("choice_tasks", option, "no options to choose from"),
                                      ("balance_tasks", option, "no options to balance"),
                                      ("label_fallback_tasks", option, "no label to fall back on")):
            for t in getattr(self, key):
                if t not in TASKS:
                    raise ConfigError(f"{key}: unknown task {t!r}" + did_you_mean(t, TASKS))
                if t not in allowed:
                    raise ConfigError(f"{key}: {t} has {missing} "
                                      "(only classification tasks such as gender, speech, accent do)")
        for key in ("task_weights", "nonspeech_task_weights"):
            weights = getattr(self, key)
            if weights and len(weights) != len(self.tasks):
                raise ConfigError(f"{key}: give one weight per entry of tasks")
            if any(w < 0 for w in weights):
                raise ConfigError(f"{key}: weights must be >= 0")
        by_id = {t.id: t for t in TEMPLATES}
        for tid in self.templates:
            if tid not in by_id:
                raise ConfigError(f"templates: unknown template {tid!r}" + did_you_mean(tid, by_id))
            t = by_id[tid]
            if t.split != "seen":
                raise ConfigError(f"templates: {tid} is an unseen (eval-only) template")
            if self.tasks and t.task not in self.tasks:
                raise ConfigError(f"templates: {tid} is a {t.task} template, not one of tasks {self.tasks}")
        if not 0.0 <= self.bare_fraction <= 1.0:
            raise ConfigError("bare_fraction: must be in [0, 1]")
        if self.option_answers != "choice":
            for t in self.label_fallback_tasks:
                if t not in self.choice_tasks and t not in OPTION_SWAPS:
                    raise ConfigError(f"label_fallback_tasks: {t} is not answered by scored choice; add it "
                                      "to choice_tasks (the fallback replaces a wrong scored choice); only "
                                      f"{', '.join(OPTION_SWAPS)} can fall back on a generated answer")
        if (self.option_answers == "choice" or self.choice_tasks) and self.backend == "vllm":
            raise ConfigError("option_answers: 'choice' (and choice_tasks) scores replies with the transformers or ctranslate2 backend only")
        self.teacher_config().validate()

    def teacher_config(self) -> TeacherConfig:
        return TeacherConfig(self.model, self.backend, self.dtype, self.batch_size)

    def sampling(self, do_sample: bool) -> Sampling:
        return Sampling(do_sample, self.temperature, self.top_p, self.max_new_tokens, self.seed)
