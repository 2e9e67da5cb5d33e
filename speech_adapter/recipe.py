"""A recipe: one YAML for the whole pipeline, validated before any work.

`load_recipe` is the one reader: `run` takes every section, `train` takes `model` + `train`,
`data synth|import|attributes|describe|distill|magpie --recipe` and `eval build|run --recipe`
take theirs (`Recipe.section_config`), each with the paths the pipeline would give it.

    name: demo                 # run name
    output_dir: runs/demo      # everything the run writes goes under here
    seed: 0
    data:     {source, synth|import_|corpus, heldout_fraction, attributes, describe}
    distill:  data_prep.distill.DistillConfig (input/output are set by the pipeline)
    replay:   {magpie_rows}    # text-only pseudo-replay rows (Magpie) written by the backbone
    model:    speech_adapter.models.config.ModelConfig
    train:    speech_adapter.train.config.TrainConfig (data files are set by the pipeline)
    eval:     {suite: SuiteConfig, suites, modes, batch_size, max_new_tokens, text_backend, systems}
    export:   {merge_lora}

Paths that stages hand to each other are not recipe keys: a recipe that sets one is refused
with the key's name, so a recipe never disagrees with the run directory's layout (a command run
alone takes other paths as flags, e.g. `train --train-file`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data_prep.config import AttributesConfig, DescribeConfig, ImportConfig, SynthConfig
from data_prep.distill import DistillConfig
from data_prep.magpie import MagpieConfig
from data_prep.synth import corpus_path
from speech_adapter.config import apply_overrides, did_you_mean, from_dict, help_field, load_yaml, to_dict
from speech_adapter.errors import ConfigError
from speech_adapter.eval.real import refuse_real_training
from speech_adapter.eval.runner import Mode
from speech_adapter.eval.suite import SuiteConfig
from speech_adapter.eval.systems import TEXT_BACKENDS
from speech_adapter.models.config import ModelConfig
from speech_adapter.prompts import REPETITION_PENALTY
from speech_adapter.train.config import TrainConfig

# keys the pipeline fills in itself, per section
MANAGED = {
    "data.synth": ("out_dir",),
    "data.import_": ("out_dir",),
    "data.attributes": ("input", "output"),
    "data.describe": ("input", "output"),
    "distill": ("input", "output"),
    "replay.magpie": ("output", "num_candidates"),
    "train": ("train_file", "dev_file", "text_file"),
}


# stage config class -> the Recipe method that builds it from the recipe's section
SECTION_CONFIGS = {SynthConfig: "synth_config", ImportConfig: "import_config", AttributesConfig: "attributes_config",
                   DescribeConfig: "describe_config", DistillConfig: "distill_config", MagpieConfig: "magpie_config",
                   TrainConfig: "train_config", SuiteConfig: "suite_config"}


@dataclass
class DataSection:
    source: Literal["synth", "import", "corpus"] = help_field(
        "synth", "where clips come from: synth (espeak-ng), import (a labelled folder or dataset), "
        "corpus (an existing corpus JSONL)")
    synth: dict = help_field(default_factory=dict, help="data_prep.config.SynthConfig settings")
    import_: dict = help_field(default_factory=dict, help="data_prep.config.ImportConfig settings")
    corpus: str | None = help_field(None, "an existing corpus JSONL (source: corpus)")
    heldout_fraction: float = help_field(0.2, "share of clips held out of training for eval")
    attributes: dict = help_field(default_factory=dict, help="data_prep.config.AttributesConfig settings")
    describe: dict = help_field(default_factory=dict, help="data_prep.config.DescribeConfig settings")

    def validate(self):
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction: must be in (0, 1), got {self.heldout_fraction}")
        if self.source == "corpus" and not self.corpus:
            raise ConfigError("corpus: source is 'corpus' but no corpus JSONL is given")
        if self.source == "corpus" and not Path(self.corpus).is_file():
            raise ConfigError(f"corpus: file not found: {self.corpus}")
        if self.source == "import" and not self.import_.get("source"):
            raise ConfigError("import_.source: source is 'import' but no label file or dataset dir is given")

        # the real eval clips never train
        refuse_real_training(self.corpus if self.source == "corpus" else None, "data.corpus")
        refuse_real_training(self.import_.get("source") if self.source == "import" else None, "data.import_.source")


@dataclass
class ReplaySection:
    magpie_candidates: int = help_field(
        0, "Magpie pseudo-replay: instructions the backbone writes for itself and answers, as "
        "text-only training rows (0 = none; the filters keep most of them)")
    magpie: dict = help_field(default_factory=dict, help="further data_prep.magpie.MagpieConfig settings")


@dataclass
class EvalSection:
    suite: dict = help_field(default_factory=dict, help="speech_adapter.eval.suite.SuiteConfig settings")
    modes: list[Mode] = help_field(default_factory=lambda: ["speech", "text_ceiling", "text_retention", "cascade"],
                                   help="speech (with audio), text_ceiling (backbone + description), "
                                        "text_retention (speech model, text-only prompts), "
                                        "cascade (backbone + Whisper's transcript)")
    systems: list[Literal["untrained", "trained"]] = help_field(default_factory=lambda: ["untrained", "trained"],
                                    help="which adapters to evaluate: untrained (random init), trained")
    batch_size: int = help_field(8, "rows per generate call")
    max_new_tokens: int = help_field(96, "generation length cap")
    repetition_penalty: float = help_field(REPETITION_PENALTY, "greedy decoding's penalty on tokens the reply "
                                           "already holds, every system alike (1 = none)")
    text_backend: str = help_field("auto", "text_ceiling and cascade through: auto (CTranslate2 on a CPU when "
                                           "the backbone converts and repetition_penalty is 1), ctranslate2, transformers")
    suites: list[Literal["heldout", "real", "format"]] = help_field(
        default_factory=lambda: ["heldout"],
        help="suites to evaluate every system on: heldout (this run's held-out clips, <run>/eval), "
             "real (the shipped real recordings, <run>/eval/real), format (the held-out clips again, "
             "every row under a format rule and every task a clip supports, n_per_task rows per task "
             "and split, <run>/eval/format: an IF rate and JSON validity on ~100 rows instead of the "
             "held-out suite's dozen; about 5 min a system on the standard)")

    def validate(self):
        if not self.suites or len(set(self.suites)) != len(self.suites):
            raise ConfigError(f"suites: give each of heldout, real, format at most once (and at least one), got {self.suites}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty: must be > 0 (1 = none), got {self.repetition_penalty}")


@dataclass
class ExportSection:
    enabled: bool = help_field(True, "export the trained adapter to OUTPUT_DIR/export")
    merge_lora: bool = help_field(False, "also write an LLM with the LoRA merged in")


@dataclass
class VariantSection:
    name: str = help_field("", "variant name; its train/eval/export go to OUTPUT_DIR/variants/NAME")
    train: dict = help_field(default_factory=dict, help="train settings that override the recipe's")
    model: dict = help_field(default_factory=dict, help="model settings that override the recipe's")

    def validate(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"name: give a plain name (letters, digits, - and _), got {self.name!r}")


@dataclass
class Recipe:
    name: str = help_field("run", "run name")
    output_dir: str = help_field("", "where the run writes (default runs/NAME)")
    seed: int = help_field(0, "seed for every stage unless a section sets its own")
    data: DataSection = help_field(default_factory=DataSection, help="clips and their descriptions")
    distill: dict = help_field(default_factory=dict, help="data_prep.distill.DistillConfig settings")
    replay: ReplaySection = help_field(default_factory=ReplaySection, help="text-only replay rows")
    model: ModelConfig = help_field(default_factory=ModelConfig, help="encoder, adapter, LLM, LoRA")
    train: dict = help_field(default_factory=dict, help="speech_adapter.train.config.TrainConfig settings")
    eval: EvalSection = help_field(default_factory=EvalSection, help="suite and systems to evaluate")
    export: ExportSection = help_field(default_factory=ExportSection, help="portable export")
    variants: list[VariantSection] = help_field(
        default_factory=list, help="train the same data several ways (e.g. task_sft vs self_distill); "
        "data and distillation are shared, each variant is trained, evaluated and compared")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}")

    @property
    def variant(self) -> str:
        return getattr(self, "_variant", "")

    def for_variant(self, v: "VariantSection") -> "Recipe":
        """This recipe with a variant's train/model overrides; its per-run outputs move to
        OUTPUT_DIR/variants/NAME while data and distillation stay shared."""
        data = to_dict(self)
        data["variants"] = []
        data["train"] = {**self.train, **v.train}
        data["model"] = {**data["model"], **v.model}
        out = from_dict(Recipe, data)
        out._variant, out._source, out._files = v.name, self.source, self.files
        out.check()
        return out

    # The stage configs, with the pipeline's paths filled in (validated at load time).
    def paths(self) -> dict[str, Path]:
        d = self.run_dir
        v = d / "variants" / self.variant if self.variant else d
        return {
            "data": d / "data", "corpus": d / "data" / "corpus.jsonl",
            "attributes": d / "data" / "attributes.jsonl", "described": d / "data" / "described.jsonl",
            "transcribed": d / "data" / "transcribed.jsonl",
            "train_clips": d / "data" / "train_clips.jsonl", "heldout_clips": d / "data" / "heldout_clips.jsonl",
            "distilled": d / "distill" / "distilled.jsonl", "text_rows": d / "distill" / "text_rows.jsonl",
            "suite": d / "eval" / "suite.jsonl", "compare": d / "eval" / "compare",
            "train": v / "train", "eval": v / "eval", "export": v / "export",
        }

    def fill(self, section: str) -> dict:
        """What the pipeline fills into `section`'s config ("data.synth", "distill", "train",
        "eval.suite") where the recipe leaves it out: its paths, the recipe's seed and LLM. The
        stage fingerprints ignore a key the recipe sets to this same value."""
        p = self.paths()
        if section == "data.synth":
            return {"out_dir": str(p["data"]), "seed": self.seed}
        if section == "distill":
            return {"input": str(p["train_clips"]), "output": str(p["distilled"]), "seed": self.seed,
                    "model": self.model.llm}
        if section == "train":
            fill = {"train_file": str(p["distilled"]), "seed": self.seed}
            if self.replay.magpie_candidates > 0:
                fill["text_file"] = str(p["text_rows"])
            return {**fill, **self.files}
        if section == "eval.suite":
            return {"seed": self.seed}
        raise KeyError(section)

    def synth_config(self) -> SynthConfig:
        return _section(SynthConfig, self.data.synth, "data.synth", self.fill("data.synth"))

    def import_config(self) -> ImportConfig:
        return _section(ImportConfig, self.data.import_, "data.import_", {"out_dir": str(self.paths()["data"])})

    def attributes_config(self, input_path) -> AttributesConfig:
        return _section(AttributesConfig, self.data.attributes, "data.attributes",
                        {"input": str(input_path), "output": str(self.paths()["attributes"])})

    def describe_config(self) -> DescribeConfig:
        return _section(DescribeConfig, self.data.describe, "data.describe",
                        {"input": str(self.paths()["attributes"]), "output": str(self.paths()["described"])})

    def distill_config(self) -> DistillConfig:
        return _section(DistillConfig, self.distill, "distill", self.fill("distill"))

    def train_config(self) -> TrainConfig:
        """The train section with the pipeline's data files, or those `load_recipe` was given."""
        return _section(TrainConfig, self.train, "train", self.fill("train"))

    def magpie_config(self) -> MagpieConfig:
        if self.replay.magpie_candidates <= 0:
            raise ConfigError("replay.magpie_candidates: 0, so this recipe writes no Magpie rows; set it to "
                              "the number of instruction slots to try")
        return _section(MagpieConfig, self.replay.magpie, "replay.magpie",
                        {"output": str(self.paths()["text_rows"]), "seed": self.seed, "model": self.model.llm,
                         "num_candidates": self.replay.magpie_candidates})

    def suite_config(self) -> SuiteConfig:
        return _section(SuiteConfig, self.eval.suite, "eval.suite", self.fill("eval.suite"))

    @property
    def files(self) -> dict[str, str]:
        """Data files of the train command's flags (train_file, text_file, dev_file) that replace
        the pipeline's."""
        return getattr(self, "_files", {})

    def check(self) -> None:
        """Build every stage config once so a bad key anywhere fails before any work (`load_recipe`
        calls it; not `validate`, which `from_dict` would call before the train files are known)."""
        if self.data.source == "synth":
            self.synth_config()
        elif self.data.source == "import":
            self.import_config()
        self.attributes_config(self.paths()["corpus"])
        self.describe_config()
        self.distill_config()
        self.train_config()
        if self.replay.magpie_candidates > 0:
            self.magpie_config()
        self.suite_config()
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError(f"variants: names must be unique, got {names}")
        for v in self.variants:
            try:
                self.for_variant(v)  # checks itself
            except ConfigError as e:
                raise ConfigError(f"variants[{v.name}]: {e}") from None

        if self.eval.text_backend not in TEXT_BACKENDS:
            raise ConfigError(f"eval.text_backend: {self.eval.text_backend!r} is not one of {list(TEXT_BACKENDS)}")

    def section_config(self, cls):
        """The config of the stage that `cls` configures, as the pipeline would build it."""
        if cls is AttributesConfig:
            return self.attributes_config(self.corpus_path())
        return getattr(self, SECTION_CONFIGS[cls])()

    def corpus_path(self) -> Path:
        """The corpus JSONL the data stage writes (or the recipe names)."""
        if self.data.source == "corpus":
            return Path(self.data.corpus)
        if self.data.source == "synth":
            return corpus_path(self.synth_config())
        return self.paths()["data"] / "corpus.jsonl"

    def pick_variant(self, name: str | None, command: str) -> "Recipe":
        """The recipe variant `name` trains, or this recipe when it has none; a recipe with variants
        and no name is the pipeline's to run, and the ConfigError says so."""
        names = [v.name for v in self.variants]
        if name is None and not names:
            return self
        if not names:
            raise ConfigError(f"--variant {name}: this recipe has no variants")
        if name is None:
            raise ConfigError(
                f"variants: {self.source} trains {len(names)} variants ({', '.join(names)}), so it is a "
                f"pipeline recipe: `speech-adapter run {self.source}` runs them all; "
                f"`speech-adapter {command} {self.source} --variant NAME` runs one")
        if name not in names:
            raise ConfigError(f"--variant {name}: not one of {names}{did_you_mean(name, names)}")
        return self.for_variant(self.variants[names.index(name)])

    @property
    def source(self) -> str:
        return getattr(self, "_source", "RECIPE")


def _section(cls, user: dict, prefix: str, fill: dict):
    """`cls` from the user's settings plus the pipeline's; a user-set managed key is refused."""
    for key in MANAGED.get(prefix, ()):
        if key in user:
            raise ConfigError(f"{prefix}.{key}: set by the pipeline (a path inside output_dir, or a "
                              "setting of its own section); remove it")
    merged = {k: v for k, v in fill.items() if k in {f.name for f in dataclasses.fields(cls)}}
    merged.update(user)
    return from_dict(cls, merged, prefix=prefix)


def load_recipe(path, overrides: list[str] | None = None, **train_files) -> Recipe:
    """Read, override (`a.b=value`), and fully validate a recipe: the one reader every command
    uses. `train_files` (train_file, text_file, dev_file; None = the pipeline's) are the train
    command's own rows. Raises ConfigError naming the key."""
    data = apply_overrides(load_yaml(path), list(overrides or []))
    if "data" in data and isinstance(data["data"], dict) and "import" in data["data"]:
        data["data"]["import_"] = data["data"].pop("import")
    recipe = from_dict(Recipe, data)
    recipe._source = str(path)
    recipe._files = {k: str(v) for k, v in train_files.items() if v is not None}
    recipe.check()
    return recipe


def resolved_dict(recipe: Recipe) -> dict:
    """The recipe with every stage config resolved (defaults and pipeline paths filled in)."""
    out = to_dict(recipe)
    out["distill"] = to_dict(recipe.distill_config())
    out["train"] = to_dict(recipe.train_config())
    out["eval"]["suite"] = to_dict(recipe.suite_config())
    if recipe.data.source == "synth":
        out["data"]["synth"] = to_dict(recipe.synth_config())
    return out
