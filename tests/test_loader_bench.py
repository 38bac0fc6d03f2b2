"""The VOC-layout loader benchmark: a real tree, real workers, a record the markdown renders."""
import json
from pathlib import Path

from benchmarks.bench import render_markdown
from kyam_lib.data import build_dataset
from benchmarks.loader_bench import loader_markdown, measure_loader, write_voc_layout


def test_loader_images_per_s_by_worker_count(tmp_path):
    root = write_voc_layout(tmp_path / "VOC2012", images=8)
    dataset = build_dataset("voc", root, "train", image_size=(224, 224), augment=True)
    assert len(dataset) == 8 and dataset.read_raw(0)[0].shape == (375, 500, 3)
    assert dataset[0]["image"].shape == (3, 224, 224)
    rates = measure_loader(root, workers=(0, 1), batch_size=4, epochs=1)
    assert list(rates) == ["0", "1"] and all(rate > 0 for rate in rates.values())
    record = {"loader_images_per_s": rates, "loader_benchmark": {"images": 8, "batch_size": 4, "epochs": 1},
              "gpu_vitb_images_per_s": None}
    text = "\n".join(loader_markdown(record))
    assert "| 1 |" in text and "GPU figures pending" in text
    assert "Loader ÷ GPU model images/s: " in "\n".join(loader_markdown({**record, "gpu_vitb_images_per_s": 3000.0}))


def test_committed_benchmarks_render_the_loader_section():
    record = json.loads((Path(__file__).resolve().parents[1] / "results" / "benchmarks.json").read_text())
    assert set(record["loader_images_per_s"]) == {"0", "1", "2"}
    assert "## VOC-layout loader (CPU)" in render_markdown(record)
