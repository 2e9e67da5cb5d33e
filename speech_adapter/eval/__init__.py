"""Evaluation: format constraints, scoring, suites, the cached runner, reports.

- `constraints`: IFEval-style checkers (`CHECKERS`, `check`, `check_all`, `instruction_text`).
- `scoring`: `normalize`, `parse_option`, `parse_number`, `wer`, `word_overlap`, `score_answer`.
- `suite`: `build_suite` from held-out clips, `check_unseen_leak` against training rows.
- `external`: Dynamic-SUPERB and Speech-IFEval loaders.
- `runner`: `evaluate(rows, {mode: generate})` with a resumable generation cache.
- `systems`: `speechlm_generate_fn` adapts a `SpeechLM` to every mode (cascade included).
- `scorecard`: the one block at the top of every report.md / compare.md (and scorecard.json).
- `report`: report.json / report.md / PNGs and `compare` of runs.
- `learn_forget`: what each system learned vs forgot (paired CIs) and the forgetting study's plots, in `compare`.
The instruction templates themselves live in `speech_adapter.templates` (shared with distillation).
"""
