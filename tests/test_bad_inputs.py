"""The bad-input catalogue: data, configs, checkpoints and notebook parameters in one place.

Every case builds one bad input and runs the entry point a user would run (the training loop,
the CLI's config parsing, checkpoint loading, the notebook parameter check). Each must raise one
exception of the stated type whose message names the offending file or field and says what is
wrong, and must leave the run's output directory exactly as it was (no partial files).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Callable

import nbformat
import numpy as np
import pytest
import tifffile
import torch
from safetensors.torch import save_file

from data_fixtures import write_coco, write_dfc2020, write_png
from kyam_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from kyam_lib.config import ConfigError, TrainConfig
from kyam_lib.data import DatasetError, DatasetNotFoundError
from kyam_lib.data.dfc2020 import read_tif
from kyam_lib.data.synthetic import generate_shapes
from kyam_lib.method.model import KyamViT
from kyam_lib.experiments.notebook_params import NotebookParameterError, check_parameters
from kyam_lib.presets import preset_overrides
from kyam_lib.train import config_from_args, main, model_config_for, train


@dataclasses.dataclass
class Bad:
    action: Callable[[], object]  # runs the entry point on the bad input
    error: type[Exception]
    names: str                    # the file or field the message must name (literally)
    problem: str                  # regex: what the message must say is wrong


@dataclasses.dataclass
class Env:
    tmp: Path
    shapes_template: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    @property
    def data_root(self) -> Path:
        return self.tmp / "data"

    def shapes(self) -> Path:
        """A fresh copy of the small shapes set (8 train, 4 val images) to break."""
        target = self.data_root / "shapes"
        shutil.copytree(self.shapes_template, target)
        return target

    def config(self, **overrides) -> TrainConfig:
        values = {**TrainConfig().to_dict(), **preset_overrides("smoke"), "data_root": str(self.data_root),
                  "out_dir": str(self.out), "max_train_images": 0, "max_val_images": 0, "batch_size": 4,
                  "epochs": 1, "device": "cpu", **overrides}
        return TrainConfig.from_dict(values)

    def train(self, **overrides) -> Callable[[], object]:
        return lambda: train(self.config(**overrides), show_progress=False)

    def resume(self, **overrides) -> Callable[[], object]:
        return lambda: train(self.config(**overrides), resume=True, show_progress=False)

    def cli(self, *argv: str) -> Callable[[], object]:
        return lambda: config_from_args(["--preset", "smoke", "--out", str(self.out), *argv])

    def config_file(self, text: str) -> Path:
        path = self.tmp / "run.json"
        path.write_text(text)
        return path

    def checkpoint(self, **model_overrides) -> Path:
        """checkpoints/epoch_0001 in the run directory, from a model with the given config changes."""
        base = model_config_for(self.config(), num_classes=6, in_channels=3, multi_label=True)
        model = KyamViT(base.replace(**model_overrides))
        return save_checkpoint(self.out / "checkpoints" / "epoch_0001", model, train_config=self.config().to_dict(),
                               training_state={"epoch": 1})


CATALOGUE: dict[str, Callable[[Env], Bad]] = {}


def case(case_id: str):
    def register(build: Callable[[Env], Bad]) -> Callable[[Env], Bad]:
        CATALOGUE[case_id] = build
        return build
    return register


# -- data -----------------------------------------------------------------------------------
@case("data/corrupt-image")
def _(env: Env) -> Bad:
    path = env.shapes() / "JPEGImages" / "train_000003.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return Bad(env.train(), DatasetError, str(path), "corrupt or truncated image")


@case("data/truncated-png")
def _(env: Env) -> Bad:
    path = env.shapes() / "SegmentationClass" / "train_000002.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Bad(env.train(), DatasetError, str(path), "corrupt or truncated mask")


@case("data/mask-size-mismatch")
def _(env: Env) -> Bad:
    path = env.shapes() / "SegmentationClass" / "train_000001.png"
    write_png(path, np.zeros((24, 24), np.uint8))
    return Bad(env.train(), DatasetError, str(path), "mask size 24x24 differs from image size 32x32")


@case("data/label-out-of-range")
def _(env: Env) -> Bad:
    path = env.shapes() / "SegmentationClass" / "train_000005.png"
    mask = np.zeros((32, 32), np.uint8)
    mask[4:9, 4:9] = 50  # 6 classes + background: valid values are 0..6 and 255
    write_png(path, mask)
    return Bad(env.train(), DatasetError, str(path), r"label value\(s\) \[50\] outside the class list")


@case("data/empty-split")
def _(env: Env) -> Bad:
    path = env.shapes() / "ImageSets" / "Segmentation" / "train.txt"
    path.write_text("")
    return Bad(env.train(), DatasetError, str(path), "split file is empty")


@case("data/listed-image-missing")
def _(env: Env) -> Bad:
    path = env.shapes() / "JPEGImages" / "val_000002.jpg"  # the validation split is read after epoch 1
    path.unlink()
    return Bad(env.train(), DatasetNotFoundError, str(path), "image file not found")


@case("data/missing-root")
def _(env: Env) -> Bad:
    nowhere = env.tmp / "no_such_data"
    return Bad(env.train(dataset="voc", data_root=str(nowhere)), DatasetNotFoundError, str(nowhere),
               r"(?s)voc: dataset not found under .*Expected layout")


@case("data/malformed-coco-json")
def _(env: Env) -> Bad:
    root = env.data_root / "coco"
    write_coco(root, split="train")
    write_coco(root, split="val")
    path = root / "annotations" / "instances_train2014.json"
    path.write_text(path.read_text()[:200])  # cut off mid-file
    return Bad(env.train(dataset="coco"), DatasetError, str(path), "malformed COCO json")


@case("data/coco-unknown-category")
def _(env: Env) -> Bad:
    root = env.data_root / "coco"
    write_coco(root, split="train")
    path = root / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 999
    path.write_text(json.dumps(data))
    return Bad(env.train(dataset="coco"), DatasetError, str(path), "category_id 999 outside the category list")


@case("data/wrong-band-count")
def _(env: Env) -> Bad:
    root = env.data_root / "dfc2020"
    write_dfc2020(root)
    path = root / "ROIs0000_test" / "s2_0" / "ROIs0000_test_s2_0_p1.tif"
    tifffile.imwrite(path, read_tif(path)[..., :10], photometric="minisblack", planarconfig="contig")
    return Bad(env.train(dataset="dfc2020", batch_size=2), DatasetError, str(path),
               "wrong band count: 10 bands, expected 13")


@case("data/unknown-dataset")
def _(env: Env) -> Bad:
    return Bad(env.train(dataset="pascal"), ConfigError, "TrainConfig.dataset", "unknown dataset 'pascal'")


# -- configs --------------------------------------------------------------------------------
@case("config/unknown-option")
def _(env: Env) -> Bad:
    return Bad(env.cli("--learning_rate", "0.1"), ConfigError, "--learning_rate", "unknown option")


@case("config/unknown-field-in-file")
def _(env: Env) -> Bad:
    path = env.config_file('{"lr": 0.001, "epoch": 3}')
    return Bad(env.cli("--config", str(path)), ConfigError, str(path), r"unknown TrainConfig field\(s\) \['epoch'\]")


@case("config/wrong-type")
def _(env: Env) -> Bad:
    return Bad(env.cli("--epochs", "two"), ConfigError, "TrainConfig.epochs", "expected an integer, got 'two'")


@case("config/wrong-type-in-file")
def _(env: Env) -> Bad:
    path = env.config_file('{"augment": "yes"}')
    return Bad(env.cli("--config", str(path)), ConfigError, f"{path}: TrainConfig.augment",
               "expected true/false, got 'yes'")


@case("config/image-size-not-divisible-by-patch")
def _(env: Env) -> Bad:
    return Bad(env.cli("--image_size", "[30, 30]"), ConfigError, "TrainConfig.image_size",
               "height 30 is not a positive multiple of patch_size 8")


@case("config/file-not-json")
def _(env: Env) -> Bad:
    path = env.config_file("{lr: 0.001,")
    return Bad(env.cli("--config", str(path)), ConfigError, str(path), "not valid JSON")


@case("config/file-missing")
def _(env: Env) -> Bad:
    path = env.tmp / "no_such_config.json"
    return Bad(env.cli("--config", str(path)), ConfigError, str(path), "file not found")


@case("config/unknown-preset")
def _(env: Env) -> Bad:
    return Bad(lambda: config_from_args(["--preset", "smok", "--out", str(env.out)]), ConfigError, "--preset",
               "unknown preset 'smok'")


@case("config/batch-larger-than-data")
def _(env: Env) -> Bad:
    env.shapes()
    return Bad(env.train(batch_size=16), ConfigError, "TrainConfig.batch_size",
               "16 exceeds the 8 training images")


# -- checkpoints ----------------------------------------------------------------------------
@case("checkpoint/wrong-class-count")
def _(env: Env) -> Bad:
    env.shapes()
    path = env.checkpoint(num_classes=4)
    return Bad(env.resume(), CheckpointError, str(path), "model has 4 classes, the data has 6")


@case("checkpoint/wrong-channel-count")
def _(env: Env) -> Bad:
    env.shapes()
    path = env.checkpoint(in_channels=13)
    return Bad(env.resume(), CheckpointError, str(path), "model expects 13 input channels, the data has 3")


@case("checkpoint/other-architecture")
def _(env: Env) -> Bad:
    env.shapes()
    path = env.checkpoint(embed_dim=128)
    return Bad(env.resume(), CheckpointError, str(path),
               r"its model differs from this run's config in embed_dim \(checkpoint 128, run 64\)")


@case("checkpoint/not-a-checkpoint")
def _(env: Env) -> Bad:
    env.shapes()
    path = env.out / "checkpoints" / "epoch_0001" / "model.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 a zip archive, not safetensors")
    return Bad(env.resume(), CheckpointError, str(path), "not a safetensors checkpoint")


@case("checkpoint/foreign-safetensors")
def _(env: Env) -> Bad:
    path = env.out / "weights.safetensors"
    path.parent.mkdir(parents=True)
    save_file({"weight": torch.zeros(3)}, str(path))
    return Bad(lambda: load_checkpoint(path), CheckpointError, str(path), "not a kyam checkpoint")


@case("checkpoint/truncated-training-state")
def _(env: Env) -> Bad:
    env.shapes()
    path = env.checkpoint()
    state = path / "train_state.json"
    state.write_text(state.read_text()[:5])
    return Bad(env.resume(), CheckpointError, str(path), "training state is unreadable")


# -- notebook parameters --------------------------------------------------------------------
def _notebook(env: Env, *, tagged: bool) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("epochs = 2\nl0_weight = 0.01\nsmoke = False")
    if tagged:
        cell.metadata["tags"] = ["parameters"]
    notebook.cells = [nbformat.v4.new_markdown_cell("# a notebook"), cell, nbformat.v4.new_code_cell("print(epochs)")]
    path = env.tmp / "01_train.ipynb"
    nbformat.write(notebook, path)
    return path


@case("notebook/unknown-parameter")
def _(env: Env) -> Bad:
    path = _notebook(env, tagged=True)
    return Bad(lambda: check_parameters(path, {"l0_wieght": 0.1, "epochs": 1}), NotebookParameterError, str(path),
               r"unknown parameter\(s\) \['l0_wieght'\]")


@case("notebook/no-parameters-cell")
def _(env: Env) -> Bad:
    path = _notebook(env, tagged=False)
    return Bad(lambda: check_parameters(path, {"epochs": 1}), NotebookParameterError, str(path),
               "expected exactly one code cell tagged 'parameters', found 0")


# -- the test -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template") / "shapes"
    generate_shapes(root, seed=0, num_train=8, num_val=4, image_size=32, num_classes=6)
    return root


def snapshot(folder: Path) -> dict[str, str] | None:
    """Every file under `folder` with a hash of its bytes; None when the folder does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def test_catalogue_covers_every_kind_of_input():
    kinds = {case_id.split("/")[0] for case_id in CATALOGUE}
    assert kinds == {"data", "config", "checkpoint", "notebook"}
    assert len(CATALOGUE) >= 15


@pytest.mark.parametrize("build", CATALOGUE.values(), ids=CATALOGUE.keys())
def test_bad_input_gives_one_clear_error_and_writes_nothing(build, tmp_path, shapes_template):
    env = Env(tmp_path, shapes_template)
    bad = build(env)
    before = snapshot(env.out)
    with pytest.raises(Exception) as info:
        bad.action()
    assert info.type is bad.error, f"{info.type.__name__}: {info.value}"
    message = str(info.value)
    assert bad.names in message, message
    assert re.search(bad.problem, message), message
    assert "Traceback" not in message
    assert snapshot(env.out) == before


@pytest.mark.parametrize(("argv", "status", "says"), [
    (["--epochs", "two"], 2, "TrainConfig.epochs"),
    (["--dataset", "voc", "--data_root", "{tmp}/no_such_data"], 1, "voc: dataset not found"),
], ids=["config-error", "data-error"])
def test_cli_reports_one_line_and_writes_nothing(argv, status, says, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["--preset", "smoke", "--out", str(out), *argv]) == status
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and says in stderr
    assert not out.exists()
