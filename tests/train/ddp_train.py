"""Run under `accelerate launch --num_processes 2`: train the tiny SpeechLM, dump each rank's weights.

Usage: ddp_train.py TRAIN_JSONL RUN_DIR [FAIL_RANK]
With FAIL_RANK, that rank raises in its second step (as run_training does, cleanup runs in a finally).
"""

import faulthandler
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from speech_adapter.models.tiny import tiny_speechlm
from speech_adapter.train.config import TrainConfig
from speech_adapter.train.data import Rejects, load_train_data
from speech_adapter.train.loop import Trainer

HANG_S = 180


def main(train_file: str, run_dir: str, fail_rank: str | None = None) -> None:
    # a rank that hangs prints every thread's stack and exits, well inside the test's timeout,
    # so a failure says where it stopped
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    torch.manual_seed(0)
    cfg = TrainConfig(train_file=Path(train_file), batch_size=2, max_steps=3, save_every=0, lr=1e-3)
    trainer = Trainer(tiny_speechlm(seed=0), cfg, run_dir, load_train_data(cfg, Rejects(None)))
    trainer.setup()
    assert trainer.world == 2, f"expected 2 processes, got {trainer.world}"
    if fail_rank is not None and trainer.rank == int(fail_rank):
        step = trainer.train_step

        def failing_step(micro):
            if trainer.global_step == 1:
                raise RuntimeError(f"rank {trainer.rank} fails at step 2 (test)")
            return step(micro)

        trainer.train_step = failing_step
    try:
        trainer.train()
        state = {k: v.contiguous() for k, v in trainer.core.trainable_state_dict().items()}
        save_file(state, str(Path(run_dir) / f"rank{trainer.rank}.safetensors"))
    finally:
        trainer.cleanup()
    faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    main(*sys.argv[1:4])
