"""Session fixture for the slow tests: the prepared offline default models.

Uses the default cache ($SPEECH_ADAPTER_HOME or ~/.cache/speech_adapter) when it holds an up to
date conversion of the installed packages; otherwise prepares them into a temp home for the
session, so the tests never write into a user's cache and never test a stale conversion.
"""

import pytest


@pytest.fixture(scope="session")
def offline_dirs(tmp_path_factory):
    """Converted model dirs {"whisper" (tiny.en), "whisper_base", "llm" (SmolLM2), "qwen"}, plus
    the single-file sources "whisper_src" (tiny.en's CTranslate2 dir) and "gguf" (SmolLM2's)."""
    from speech_adapter.offline_models import prepare as prep
    from speech_adapter.offline_models.sources import SOURCES
    from speech_adapter.paths import (OFFLINE_LLM, OFFLINE_LLM_TINY, OFFLINE_WHISPER, OFFLINE_WHISPER_BASE,
                                      offline_model_dir)

    names = {"whisper": OFFLINE_WHISPER, "whisper_base": OFFLINE_WHISPER_BASE, "llm": OFFLINE_LLM_TINY,
             "qwen": OFFLINE_LLM}
    chosen = [SOURCES[n.removeprefix("offline:")] for n in names.values()]
    up_to_date = all(prep.is_up_to_date(offline_model_dir(s.name), prep.source_record(s), "float32") for s in chosen)
    with pytest.MonkeyPatch.context() as mp:
        if not up_to_date:
            mp.setenv("SPEECH_ADAPTER_HOME", str(tmp_path_factory.mktemp("speech_adapter_home")))
            prep.prepare(prep.PrepareConfig(names=list(names.values())), log=lambda m: None)
        dirs = {k: offline_model_dir(n) for k, n in names.items()}
        dirs["whisper_src"] = SOURCES[OFFLINE_WHISPER.removeprefix("offline:")].weights[0].locate().parent
        dirs["gguf"] = SOURCES[OFFLINE_LLM_TINY.removeprefix("offline:")].weights[0].locate()
        yield dirs
