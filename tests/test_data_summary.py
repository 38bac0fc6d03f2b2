"""Dataset summary, co-occurrence, sample grid and the command line, on the VOC fixture."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from data_fixtures import write_voc  # noqa: E402
from kyam_lib.data import build_dataset  # noqa: E402
from kyam_lib.data.summary import cooccurrence, dataset_summary, format_summary, main, sample_grid_figure  # noqa: E402


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    write_voc(root)
    return root


def test_summary_numbers(voc):
    ds = build_dataset("voc", voc, "val")  # masks 3 (background only) and 4 (a 4x4 dog in void)
    summary = dataset_summary(ds)
    assert summary["images"] == 2 and summary["labels_per_image"] == {"0": 1, "1": 1}
    assert summary["images_per_class"]["dog"] == 1 and sum(summary["images_per_class"].values()) == 1
    total = 2 * 12 * 16
    assert summary["pixel_fraction"]["background"] == pytest.approx(192 / total)
    assert summary["pixel_fraction"]["dog"] == pytest.approx(16 / total)
    assert summary["pixel_fraction"]["ignore"] == pytest.approx((192 - 16) / total)
    assert summary["image_size"] == {"min_hw": [12, 16], "max_hw": [12, 16]}
    json.dumps(summary)
    text = format_summary(summary)
    assert "dog" in text and "labels per image: 0: 1, 1: 1" in text


def test_cooccurrence_and_figure(voc):
    ds = build_dataset("voc", voc, "train")  # aeroplane; person + tvmonitor
    table = cooccurrence(ds)
    assert table.shape == (20, 20)
    assert table.loc["person", "tvmonitor"] == 1 and table.loc["aeroplane", "aeroplane"] == 1
    assert table.loc["aeroplane", "person"] == 0 and int(table.values.sum()) == 1 + 4
    fig = sample_grid_figure(ds, n=8)
    assert len(fig.axes) == 2 * len(ds)
    assert fig.axes[0].get_title() == "aeroplane"


def test_command_line(voc, capsys):
    assert main(["--dataset", "voc", "--root", str(voc), "--split", "train", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 2 and printed["images_per_class"]["person"] == 1
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "kyam_lib.data.summary", "--dataset", "voc", "--root", str(voc),
                             "--split", "val"], capture_output=True, text=True, cwd=repo, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "voc / val: 2 images" in result.stdout
