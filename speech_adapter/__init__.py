"""speech_adapter: turn a frozen text LLM into a spoken-language model by self-distillation.

Nothing happens at import time. The model is `speech_adapter.models.speechlm.SpeechLM` (the
package root sits below every layer, so it re-exports nothing from above).
"""

from speech_adapter.version import __version__

__all__ = ["__version__"]
