"""The benchmark driver: a smoke run writes every key as a number; FLOP counting, the GPU peak table,
the reproduce-timing reader, the per-image reference rule, and the reduced class attention that the
memory benchmark measures. No timings are asserted."""
import json
import math

import numpy as np
import pytest
import torch

from benchmarks import bench
from kyam_lib.method.class_maps import class_maps
from kyam_lib.config import ModelConfig
from kyam_lib.method.model import KyamViT
from kyam_lib.method.pseudo_masks import masks_without_background


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    (out / "reproduce_timing.json").write_text(json.dumps({"preset": "quick", "seconds": 123.5}))
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--smoke", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the run sets its own thread count; leave the session's as it was
    return out, json.loads((out / "benchmarks.json").read_text()), (out / "benchmarks.md").read_text()


def test_smoke_run_writes_every_key_as_a_number(smoke_run):
    _, record, _ = smoke_run
    for key in bench.REQUIRED_KEYS:
        assert _is_number(record[key]), key
        # A tiny model's class rows may fit in pages already resident: zero extra memory is possible.
        assert record[key] > 0 or (key == "class_map_memory_ratio" and record[key] == 0), key
    assert record["reproduce_quick_seconds"] == 123.5  # read from the driver's file beside the results
    for key in bench.GPU_KEYS:
        assert key in record
        if not torch.cuda.is_available():
            assert record[key] is None
    # The raw figures behind each ratio, and the ratio is their median per-pair quotient.
    small = record["train_step_small"]
    assert all(_is_number(v) and v > 0 for v in small["kyam_seconds_all"] + small["plain_seconds_all"])
    pairs = sorted(k / p for k, p in zip(small["kyam_seconds_all"], small["plain_seconds_all"]))
    assert record["train_step_ratio_small"] == pytest.approx(np.median(pairs))
    assert record["small_epoch_seconds_cpu"] == pytest.approx(record["small_epoch_steps"] * small["kyam_seconds"])
    assert record["vitb_step_seconds_cpu"] == record["train_step_vitb"]["kyam_seconds"]
    assert record["vitb_step_seconds_cpu_best"] == min(record["train_step_vitb"]["kyam_seconds_all"])
    assert 0 < record["small_epoch_seconds_cpu_best"] <= record["small_epoch_seconds_cpu"]
    memory = record["class_map_memory"]
    for variant in bench.MEMORY_VARIANTS:
        assert memory["variants"][variant]["rss_peak_bytes"] >= 0
        assert memory["variants"][variant]["maps_shape"] == [1, 5, 32, 48]
    # (B, L, H, C, P) rows of every head are C*P/N^2 of the full matrices: 5*24/30^2 in the smoke shape.
    assert memory["bytes_class_rows_all_heads"] / memory["bytes_full_attention"] == pytest.approx(5 * 24 / 30 ** 2)
    masks = record["pseudo_masks"]
    assert masks["speedup"] == pytest.approx(masks["ours_images_per_s"] / masks["reference_images_per_s"])
    assert masks["pixel_agreement"] > 0.9  # only equidistant nearest labels may differ
    assert record["torch_version"] == torch.__version__ and record["num_threads"] == 1
    assert isinstance(record["cpu_name"], str) and record["cpu_name"]


def test_smoke_markdown_has_the_table_and_the_notes(smoke_run):
    _, record, markdown = smoke_run
    assert "| benchmark | ours | reference | ratio | target | met? |" in markdown
    for label in ("1. train step, small preset", "2. peak memory for the class maps", "3. pseudo-masks",
                  "4. `make reproduce`", "≤ 1.10", "≤ 0.10", "≥ 20×"):
        assert label in markdown
    assert "Smoke run" in markdown
    assert f"{record['train_step_ratio_small']:.3f}" in markdown
    if not torch.cuda.is_available():
        assert "not measured: no GPU was lent to this session" in markdown


def test_reproduce_timing_reader(tmp_path):
    assert bench.read_reproduce_timing(tmp_path / "absent.json") is None
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"preset": "quick", "seconds": 61}))
    assert bench.read_reproduce_timing(good) == {"preset": "quick", "seconds": 61.0}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"preset": "quick", "seconds": "a minute"}))
    with pytest.raises(ValueError, match="bad.json.*seconds"):
        bench.read_reproduce_timing(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="bad.json.*preset"):
        bench.read_reproduce_timing(bad)


def test_vit_b16_forward_flops_by_hand():
    flops = bench.vit_forward_flops(embed_dim=768, depth=12, num_tokens=197, num_patches=196, patch_size=16,
                                    head_in=768, head_out=1000)
    # per block 24·N·D² + 4·N²·D = 2,788,687,872 + 119,221,248; patch embed 2·196·768·768; head 2·768·1000
    assert flops == 12 * (2_788_687_872 + 119_221_248) + 231_211_008 + 1_536_000
    assert flops / 2 == pytest.approx(17.58e9, rel=1e-3)  # ViT-B/16's familiar 17.6 GMACs


def test_peak_table_by_device_name():
    assert bench.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_bf16_flops("NVIDIA H200") == 989e12
    assert bench.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bench.peak_bf16_flops("Some Other GPU") is None


def test_reference_rule_by_hand_and_equal_to_the_batched_rule():
    maps = torch.zeros(1, 3, 1, 8)
    maps[0, 0, 0, 0:2] = 1.0
    maps[0, 1, 0, 1:3] = 2.0
    maps[0, 2, 0, 7] = 0.5
    probs = torch.tensor([[0.6, 0.9, 0.7]])
    selected = torch.tensor([[True, True, True]])
    # painted 0, then 2, then 1 (ascending probability); columns 3-6 take the nearest label
    expected = np.array([[0, 1, 1, 1, 1, 2, 2, 2]])
    assert np.array_equal(bench.reference_masks_without_background(maps[0], probs[0], selected[0]), expected)
    assert np.array_equal(masks_without_background(maps, probs, selected)[0].numpy(), expected)
    flat = torch.ones(3, 2, 4)  # nothing above its mean: the most probable selected class everywhere
    filled = bench.reference_masks_without_background(flat, torch.tensor([0.6, 0.9, 0.7]),
                                                      torch.tensor([True, False, True]))
    assert (filled == 2).all()


def test_gated_mean_attention_gives_the_same_class_maps_as_every_head():
    torch.manual_seed(0)
    model = KyamViT(ModelConfig(num_classes=4, image_size=(32, 40), patch_size=8, embed_dim=32, depth=3,
                                num_heads=4)).eval()
    with torch.no_grad():
        model.blocks[0].head_gate.log_alpha.copy_(torch.tensor([1.0, -1.0, 1.0, -1.0]))
        model.blocks[1].head_gate.log_alpha.fill_(-1.0)  # every head closed: the block adds nothing
        model.blocks[2].head_gate.log_alpha.fill_(1.0)
        images = torch.randn(2, 3, 32, 40)
        full = model(images, return_attention=True)
        reduced = model(images, return_attention=True, attention_heads="gated_mean")
    assert reduced.class_attention.shape == (2, 3, 1, 4, 20)
    assert torch.equal(reduced.logits, full.logits)
    assert reduced.class_attention[:, 1].abs().max() == 0
    torch.testing.assert_close(reduced.class_attention[:, 0, 0],
                               full.class_attention[:, 0, [0, 2]].mean(dim=1))
    for blocks in ("all", 1, [0, 2]):
        expected = class_maps(full.class_attention, full.head_gates, grid_size=full.grid_size, image_size=(32, 40),
                              blocks=blocks)
        got = class_maps(reduced.class_attention, None, grid_size=reduced.grid_size, image_size=(32, 40),
                         blocks=blocks)
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="attention_heads"):
        model(images, return_attention=True, attention_heads="max")


def test_markdown_gpu_rows_when_measured(smoke_run):
    _, record, _ = smoke_run
    measured = {**record, "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_vitb_images_per_s": 1500.0,
                "gpu_plain_vit_images_per_s": 1560.0, "gpu_mfu": 0.41, "gpu_peak_bf16_flops": 989e12,
                "gpu_train_step_ratio_vitb": 1.04, "gpu_batch_size": 128}
    markdown = bench.render_markdown(measured)
    assert "5. GPU (NVIDIA H100 80GB HBM3)" in markdown and "1500 images/s" in markdown
    assert "| 41.0% | — | — | ≥ 35% | yes |" in markdown
    assert "not measured" not in markdown.split("## How")[0]


def test_update_timing_refreshes_only_benchmark_4(tmp_path):
    import json
    import shutil
    from pathlib import Path

    from benchmarks.bench import main

    committed = Path(__file__).resolve().parents[1] / "results" / "benchmarks.json"
    shutil.copy(committed, tmp_path / "benchmarks.json")
    before = json.loads(committed.read_text())
    (tmp_path / "reproduce_timing.json").write_text(json.dumps({"preset": "quick", "seeds": [0], "seconds": 901.5}))
    assert main(["--out", str(tmp_path), "--update-timing"]) == 0
    after = json.loads((tmp_path / "benchmarks.json").read_text())
    assert after["reproduce_quick_seconds"] == 901.5
    assert {k: v for k, v in after.items() if not k.startswith("reproduce")} == \
        {k: v for k, v in before.items() if not k.startswith("reproduce")}
    assert "| 4. `make reproduce` (quick preset), wall time | 902 s" in (tmp_path / "benchmarks.md").read_text()


def test_update_timing_keeps_the_quick_time_after_a_full_reproduce(tmp_path):
    """The driver's timing file of `make reproduce PRESET=full` must not erase the quick wall time."""
    import json
    from pathlib import Path

    from benchmarks.bench import main

    committed = json.loads((Path(__file__).resolve().parents[1] / "results" / "benchmarks.json").read_text())
    committed.pop("reproduce_quick_seconds"), committed.pop("reproduce_timing", None)
    timing = tmp_path / "reproduce_timing.json"
    timing.write_text(json.dumps({"preset": "quick", "seeds": [0], "seconds": 1100.0}))
    (tmp_path / "benchmarks.json").write_text(json.dumps(committed))
    assert main(["--out", str(tmp_path), "--update-timing"]) == 0
    timing.write_text(json.dumps({"preset": "full", "seeds": [0, 1, 2], "seconds": 3000.0}))
    assert main(["--out", str(tmp_path), "--update-timing"]) == 0
    after = json.loads((tmp_path / "benchmarks.json").read_text())
    assert after["reproduce_quick_seconds"] == 1100.0
    assert after["reproduce_timing"] == {"preset": "quick", "seconds": 1100.0}
    # with no earlier quick record, another preset's time is not passed off as the quick one
    (tmp_path / "benchmarks.json").write_text(json.dumps(committed))
    assert main(["--out", str(tmp_path), "--update-timing"]) == 0
    assert json.loads((tmp_path / "benchmarks.json").read_text())["reproduce_quick_seconds"] is None
