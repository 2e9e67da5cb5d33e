"""Audio encoder, adapters and SpeechLM. Import submodules directly; nothing loads at import."""
