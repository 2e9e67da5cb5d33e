"""Inference on exported adapters: `api` (load, ask, Conversation), `chat` and `infer` commands.

Nothing is imported eagerly; use `from speech_adapter.inference.api import load, ask`.
"""
