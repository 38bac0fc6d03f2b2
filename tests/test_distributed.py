"""torchrun on 2 CPU processes (gloo) trains exactly what 1 process does with the same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kyam_lib import distributed as dist
from kyam_lib.train import SeededAugmentation, build_datasets, train
from train_helpers import log_records, smoke_config

REPO = Path(__file__).resolve().parents[1]
# 2 x batch 8 and 1 x batch 16 sum the same per-sample gradients in a different order, so they
# agree to float32 rounding, not bit for bit. Measured on CPU after 2 epochs (12 AdamW steps):
# losses within 4e-8, weights within 6.3e-6 (Adam divides by sqrt(v), which magnifies rounding in
# small gradients); for scale, epoch 2 alone moves the weights by 6e-4 on average, 0.11 at most.
LOSS_TOLERANCE = 1e-6
WEIGHT_TOLERANCE = 5e-5


def test_helpers_are_no_ops_in_a_world_of_one():
    assert (dist.world_size(), dist.rank(), dist.is_main()) == (1, 0, True)
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(dist.all_reduce_sum(x), x) and torch.equal(dist.all_gather_cat(x), x)
    assert dist.shard_indices(5) == [0, 1, 2, 3, 4]
    model = torch.nn.Linear(2, 2)
    assert dist.wrap(model, torch.device("cpu")) is model


def test_per_sample_draws_depend_on_the_sample_not_the_batch():
    a = dist.per_sample_uniforms(torch.tensor([3, 7, 11]), 6, seed=0, epoch=2)
    b = dist.per_sample_uniforms(torch.tensor([11, 3]), 6, seed=0, epoch=2)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])  # samples differ
    assert not torch.equal(a[0], dist.per_sample_uniforms(torch.tensor([3]), 6, seed=0, epoch=3)[0])
    assert not torch.equal(a[0], dist.per_sample_uniforms(torch.tensor([3]), 6, seed=1, epoch=2)[0])
    # Augmentation and masking use separate streams, so a flip does not predict a masked token.
    masking, augment = (dist.sample_seed(0, 2, 3, stream=s) for s in (dist.MASKING_STREAM, dist.AUGMENT_STREAM))
    assert masking != augment


def test_seeded_augmentation_is_keyed_by_epoch_and_index(data_root, tmp_path):
    train_set, _ = build_datasets(smoke_config(data_root, tmp_path, augment=True, max_train_images=8))
    data = SeededAugmentation(train_set, seed=0)
    rng_before = torch.get_rng_state()
    first = [data[i]["image"] for i in (5, 2)]
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global stream is left untouched
    torch.manual_seed(123)  # whatever else drew from the global generator meanwhile
    assert torch.equal(data[2]["image"], first[1]) and torch.equal(data[5]["image"], first[0])
    data.set_epoch(1)
    assert not torch.equal(data[2]["image"], first[1])  # a new epoch, a new crop


@pytest.mark.slow  # a subprocess: imports torch again
def test_two_processes_match_one_with_the_same_global_batch(data_root, tmp_path):
    # 31 validation images: the two ranks score 16 and 15 of them; none may be counted twice.
    common = dict(epochs=2, batch_size=16, max_val_images=31, augment=True)
    single = train(smoke_config(data_root, tmp_path / "single", **common), show_progress=False)

    cfg = smoke_config(data_root, tmp_path / "ddp", **common)
    cfg_file = tmp_path / "ddp.json"
    cfg.to_json(cfg_file)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "kyam_lib.train", "--config", str(cfg_file)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done:") == 1  # only rank 0 reports

    ddp_out = tmp_path / "ddp"
    ddp = json.loads((ddp_out / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    # Only rank 0 writes: one log line per epoch, one set of checkpoints.
    assert [r["epoch"] for r in log_records(ddp_out)] == [1, 2]
    assert sorted(p.name for p in (ddp_out / "checkpoints").iterdir()) == ["epoch_0001", "epoch_0002"]

    for mine, theirs in zip(log_records(ddp_out), log_records(tmp_path / "single")):
        for key in ("train_loss", "train_cls_loss", "l0", "lr", "val_loss"):
            assert abs(mine[key] - theirs[key]) <= LOSS_TOLERANCE, (key, mine[key], theirs[key])
        assert mine["val_classifier_acc"] == theirs["val_classifier_acc"]
        assert mine["sparsity"] == theirs["sparsity"]
    a = load_file(str(ddp_out / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    largest = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"max |weight difference| 2x8 vs 1x16: {largest:.3g}")
    assert largest <= WEIGHT_TOLERANCE
    # The runs must actually have trained, or equal weights would prove nothing (the gates' lr is
    # the weights' lr: epoch 2 moves a weight by a few 1e-3).
    epoch2_change = max(float((a[k] - load_file(str(ddp_out / "checkpoints" / "epoch_0001" / "model.safetensors"))[k])
                            .abs().max()) for k in a)
    assert epoch2_change > 20 * WEIGHT_TOLERANCE
