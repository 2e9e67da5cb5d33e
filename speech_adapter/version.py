"""The toolkit version, recorded in every adapter_config.json (kept apart from the package
__init__, whose lazy `SpeechLM` would otherwise make models import themselves)."""

__version__ = "0.1.0"
