"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""


class SpeechAdapterError(Exception):
    """Base class: the message alone must tell the user what is wrong and what to do."""


class ConfigError(SpeechAdapterError):
    """An invalid recipe or option; the message names the key."""


class AudioError(SpeechAdapterError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DataError(SpeechAdapterError):
    """A malformed data row or file; the message names the file and line."""


class ModelNotFoundError(SpeechAdapterError):
    """Weights that are not on this machine (e.g. a hub id without hub access)."""
