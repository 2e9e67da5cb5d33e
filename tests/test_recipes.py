"""Every shipped recipe validates; recipe errors name the key; the pipeline skips finished stages."""

from pathlib import Path

import pytest

from speech_adapter.cli import main
from speech_adapter.errors import ConfigError
from speech_adapter.pipeline import _stage_config, split_heldout
from speech_adapter.recipe import load_recipe
from speech_adapter.stages import StageRunner

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
PIPELINE_RECIPES = [p for p in RECIPES if "accelerate" not in p.parts]


def test_recipes_are_found():
    names = {p.name for p in PIPELINE_RECIPES}
    assert {"demo.yaml", "standard.yaml", "forgetting_study.yaml"} <= names
    assert any("hub" in p.parts for p in PIPELINE_RECIPES)


@pytest.mark.parametrize("path", PIPELINE_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert path.read_text().startswith("# speech-adapter run")  # the launch command comes first
    for v in recipe.variants:
        assert recipe.for_variant(v).paths()["train"] != recipe.paths()["train"]


# every command that reads a recipe, as argv after `speech-adapter` (RECIPE is the path)
RECIPE_COMMANDS = [
    ["run", "RECIPE", "--dry-run"],
    ["train", "RECIPE", "--dry-run"],
    *[["data", sub, "--recipe", "RECIPE", "--dry-run"]
      for sub in ("synth", "import", "attributes", "describe", "distill", "magpie")],
    ["eval", "build", "--recipe", "RECIPE", "--dry-run"],
    ["eval", "run", "--recipe", "RECIPE", "--dry-run"],
]


def _refusal(recipe, argv) -> str | None:
    """What a command must say instead of running this recipe, or None when it must accept it."""
    if argv[0] == "train" or argv[:2] == ["eval", "run"]:
        return "speech-adapter run" if recipe.variants else None  # variants: the pipeline's to run
    if argv[:2] == ["data", "magpie"] and recipe.replay.magpie_candidates == 0:
        return "replay.magpie_candidates"
    return None


@pytest.mark.parametrize("argv", RECIPE_COMMANDS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("path", PIPELINE_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_passes_every_commands_validation(path, argv, capsys):
    recipe = load_recipe(path)
    argv = [str(path) if a == "RECIPE" else a for a in argv]
    refusal = _refusal(recipe, argv)
    assert main(argv) == (2 if refusal else 0), capsys.readouterr().err
    err = capsys.readouterr().err
    if refusal:
        assert refusal in err and err.count("\n") == 1
    for v in recipe.variants if refusal == "speech-adapter run" else []:
        assert main(argv + ["--variant", v.name]) == 0, capsys.readouterr().err


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, msg", [
    ("name: x\ntrian: {}\n", "unknown key 'trian'; did you mean 'train'"),
    ("train: {lr: fast}\n", "train.lr: expected a number"),
    ("train: {objectiv: task_sft}\n", "unknown key 'train.objectiv'; did you mean 'objective'"),
    ("model: {adapter: {kind: qformr}}\n", "model.adapter.kind: 'qformr' is not one of"),
    ("train: {train_file: x.jsonl}\n", "train.train_file: set by the pipeline"),
    ("data: {source: corpus, corpus: /nonexistent/c.jsonl}\n", "data.corpus: file not found"),
    ("variants: [{name: a}, {name: a}]\n", "variants: names must be unique"),
    ("variants: [{name: a, train: {objective: sft}}]\n", "variants\\[a\\]: train.objective"),
    ("eval: {systems: [trained, backbone]}\n", "eval.systems"),
    ("eval: {modes: [speech, casade]}\n", r"eval.modes\[1\]: 'casade' is not one of"),
    ("eval: {text_backend: vllm}\n", "eval.text_backend: 'vllm' is not one of"),
    ("eval: {repetition_penalty: 0}\n", "repetition_penalty: must be > 0"),
])
def test_recipe_errors_name_the_key(tmp_path, text, msg):
    with pytest.raises(ConfigError, match=msg):
        load_recipe(_write(tmp_path, text))


def test_overrides_apply_and_validate(tmp_path):
    p = _write(tmp_path, "name: x\n")
    r = load_recipe(p, ["train.lr=3e-4", "data.synth.num_clips=7", f"output_dir={tmp_path}/o"])
    assert r.train_config().lr == 3e-4 and r.synth_config().num_clips == 7
    assert r.paths()["distilled"] == tmp_path / "o" / "distill" / "distilled.jsonl"
    with pytest.raises(ConfigError, match="train.max_stesp"):
        load_recipe(p, ["train.max_stesp=3"])


def test_heldout_split_is_deterministic_and_disjoint():
    rows = [{"id": f"c{i}"} for i in range(50)]
    a_train, a_held = split_heldout(rows, 0.2, seed=0)
    b_train, b_held = split_heldout(list(reversed(rows)), 0.2, seed=0)
    assert {r["id"] for r in a_held} == {r["id"] for r in b_held} and len(a_held) == 10
    assert not {r["id"] for r in a_train} & {r["id"] for r in a_held}
    _, c_held = split_heldout(rows, 0.2, seed=1)
    assert {r["id"] for r in c_held} != {r["id"] for r in a_held}


def test_heldout_voices_are_never_trained_on():
    rows = [{"id": f"c{i}", "meta": {"voice_split": "heldout" if i % 5 == 0 else "train"}} for i in range(50)]
    train, held = split_heldout(rows, 0.2, seed=0)
    assert not any(r["meta"]["voice_split"] == "heldout" for r in train)
    assert {f"c{i}" for i in range(0, 50, 5)} <= {r["id"] for r in held}
    assert len(held) == 20  # the 10 held-out-voice clips plus the hashed 20 % of all 50


def test_stage_runner_skips_complete_stage_and_reruns_on_change(tmp_path):
    calls = []
    runner = StageRunner(tmp_path, log=lambda m: None)
    runner.run("s", "fp1", lambda: calls.append(1) or {"n": 1})
    assert runner.run("s", "fp1", lambda: calls.append(2) or {"n": 2}) == {"n": 1}
    runner.run("s", "fp2", lambda: calls.append(3) or {"n": 3})
    assert calls == [1, 3]


def test_a_stage_whose_output_was_deleted_runs_again(tmp_path):
    out = tmp_path / "adapter"
    calls, logs = [], []
    runner = StageRunner(tmp_path, log=logs.append)

    def train():
        calls.append(1)
        out.mkdir(exist_ok=True)
        return {"status": "done", "adapter": str(out)}

    runner.run("train", "fp", train)
    runner.run("train", "fp", train)
    assert calls == [1]  # the adapter is there: skipped
    out.rmdir()
    runner.run("train", "fp", train)
    assert calls == [1, 1] and out.is_dir()
    assert any("is gone: running it again" in m for m in logs)


def test_writing_out_a_value_the_pipeline_fills_keeps_the_stage_fingerprints(tmp_path):
    """`train.seed=0` in a recipe whose seed is 0 reruns nothing; another seed reruns training."""
    p = _write(tmp_path, "name: x\nseed: 0\n")

    def stage_configs(overrides):
        r = load_recipe(p, overrides)
        return [_stage_config(r, s) for s in ("data", "distill", "train", "eval")]

    plain = stage_configs([])
    assert stage_configs(["train.seed=0", "distill.seed=0", "data.synth.seed=0"]) == plain
    other = stage_configs(["train.seed=1"])
    assert other[:2] == plain[:2] and other[2] != plain[2] and other[3] != plain[3]


def test_a_thread_count_or_cache_folder_reruns_no_synthesis(tmp_path):
    """Kokoro's thread count and the TTS cache make the same clips: a recipe that raises
    `kokoro_threads` keeps its data; one that changes the clips does not."""
    p = _write(tmp_path, "name: x\nseed: 0\n")
    plain = _stage_config(load_recipe(p), "data")
    assert _stage_config(load_recipe(p, ["data.synth.kokoro_threads=2",
                                         f"data.synth.cache_dir={tmp_path / 'tts'}"]), "data") == plain
    assert _stage_config(load_recipe(p, ["data.synth.num_clips=7"]), "data") != plain


def test_a_failing_stage_leaves_no_marker(tmp_path):
    runner = StageRunner(tmp_path, log=lambda m: None)
    with pytest.raises(RuntimeError):
        runner.run("s", "fp", lambda: (_ for _ in ()).throw(RuntimeError("killed")))
    assert not runner.is_done("s", "fp")


@pytest.mark.parametrize("argv", [["RECIPE", "seed=7", "--dry-run"], ["RECIPE", "--dry-run", "seed=7"],
                                  ["RECIPE", "--until", "train", "seed=7", "--dry-run"]],
                         ids=["before", "after", "between"])
def test_run_overrides_anywhere_on_the_line(argv, capsys):
    path = str(ROOT / "recipes" / "demo.yaml")
    assert main(["run", *[path if a == "RECIPE" else a for a in argv]]) == 0
    assert "\nseed: 7\n" in capsys.readouterr().out


def test_run_unknown_flag_still_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(ROOT / "recipes" / "demo.yaml"), "--dry-run", "--nope"])
    assert e.value.code == 2 and "--nope" in capsys.readouterr().err
