"""Every shipped accelerate config under recipes/accelerate/ parses and names a known backend."""

from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "accelerate").glob("*.yaml"))


def test_configs_shipped():
    assert {p.stem for p in CONFIGS} >= {"ddp_cpu", "ddp_gpu", "fsdp", "deepspeed_zero2"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(path))  # accelerate's own reader: unknown keys raise
    assert cfg.distributed_type in set(DistributedType)
    assert path.read_text().startswith("# accelerate launch --config_file recipes/accelerate/")
