"""speech_adapter: turn a frozen text LLM into a spoken-language model by self-distillation.

Nothing heavy happens at import time; `SpeechLM` is imported lazily.
"""

from speech_adapter.version import __version__

__all__ = ["SpeechLM", "__version__"]


def __getattr__(name):
    if name == "SpeechLM":
        from speech_adapter.models.speechlm import SpeechLM

        return SpeechLM
    raise AttributeError(name)
