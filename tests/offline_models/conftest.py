"""Session fixture for the slow tests: the prepared offline models.

Uses the default cache ($SPEECH_ADAPTER_HOME or ~/.cache/speech_adapter) when it holds an up to
date conversion of the installed packages; otherwise prepares both into a temp home for the
session, so the tests never write into a user's cache and never test a stale conversion.
"""

import pytest


@pytest.fixture(scope="session")
def offline_dirs(tmp_path_factory):
    """{"whisper": Path, "llm": Path} of converted models, plus "whisper_src" and "gguf" sources."""
    from speech_adapter.offline_models import prepare as prep
    from speech_adapter.paths import offline_model_dir

    up_to_date = all(prep.is_up_to_date(offline_model_dir(s.name), prep.source_record(s), "float32")
                     for s in prep.SOURCES.values())
    with pytest.MonkeyPatch.context() as mp:
        if not up_to_date:
            mp.setenv("SPEECH_ADAPTER_HOME", str(tmp_path_factory.mktemp("speech_adapter_home")))
            prep.prepare(prep.PrepareConfig(), log=lambda m: None)
        dirs = {k: offline_model_dir(s.name) for k, s in prep.SOURCES.items()}
        dirs["whisper_src"] = prep.SOURCES["whisper"].source_paths()[0].parent
        dirs["gguf"] = prep.SOURCES["llm"].source_paths()[0]
        yield dirs
