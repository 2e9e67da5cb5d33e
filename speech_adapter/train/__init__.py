"""Training: recipe `train:` section (`config.TrainConfig`), the four objectives (`objectives`),
data batching (`data`), encoder feature cache (`feature_cache`), checkpoints (`checkpoint`), the
accelerate loop (`loop.Trainer`) and the `speech-adapter train` command (`cli`, `cli.run_training`).

Nothing is imported here, so `import speech_adapter.train` stays light.
"""
