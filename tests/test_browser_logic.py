"""The attention browser without a browser: cache, rendering, gate map and widget wiring."""
import numpy as np
import pytest
import torch

from kyam_lib.method.class_maps import class_maps
from kyam_lib.apps.browser import BrowserApp, GateGrid
from kyam_lib.apps.browser_logic import AttentionBrowser, ClassRow, find_checkpoints, resolve_checkpoint
from kyam_lib.checkpoint import save_checkpoint
from kyam_lib.config import ModelConfig, TrainConfig
from kyam_lib.data import build_dataset
from kyam_lib.data.synthetic import generate_regions, generate_shapes
from kyam_lib.io import write_json
from kyam_lib.method.model import KyamViT
from kyam_lib.method.pseudo_masks import select_classes

# Evaluation gates of the test model: block 0 all open, block 1 heads 1 and 3 pruned, block 2 all pruned.
GATES = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_shapes(root / "shapes", num_train=4, num_val=6, image_size=32)
    return root


@pytest.fixture(scope="module")
def dataset(data_root):
    return build_dataset("shapes", data_root / "shapes", "val", image_size=32)


def make_model() -> KyamViT:
    torch.manual_seed(0)
    model = KyamViT(ModelConfig(num_classes=6, image_size=(32, 32), patch_size=8, embed_dim=32, depth=3,
                                num_heads=4))
    with torch.no_grad():  # evaluation gate is open exactly when log_alpha > 0
        for block, row in zip(model.blocks, GATES):
            block.head_gate.log_alpha.copy_(torch.from_numpy(np.where(row > 0, 3.0, -3.0)))
    return model.eval()


@pytest.fixture
def browser(dataset):
    return AttentionBrowser(make_model(), dataset, display_size=64)


def count_forwards(model: KyamViT) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_forward_runs_once_per_image(dataset):
    browser = AttentionBrowser(make_model(), dataset, display_size=64, cache_size=2)
    calls = count_forwards(browser.model)
    for class_index in range(6):
        for block_range in [None, (0, 0), (1, 2)]:
            for weighting in ["gates", "mean", 0, 3]:
                browser.render(0, class_index=class_index, block_range=block_range, head_weighting=weighting,
                               opacity=0.3)
    browser.class_rows(0)
    browser.head_gates(0)
    assert calls[0] == 1
    entry = browser.cached(0)
    assert not entry.class_attention.requires_grad and entry.class_attention.shape == (3, 4, 6, 16)
    browser.render(1, class_index=0)
    browser.render(0, class_index=0)
    assert calls[0] == 2
    # Least recently used goes first: cache [1, 0] + image 2 evicts 1, keeps 0.
    browser.render(2, class_index=0)
    assert browser.cached_indices == [0, 2] and calls[0] == 3
    browser.render(0, class_index=1)
    assert calls[0] == 3
    browser.render(1, class_index=1)
    assert calls[0] == 4


def test_cached_maps_equal_a_fresh_forward(browser, dataset):
    item = dataset[0]
    with torch.no_grad():
        output = browser.model(item["image"][None], return_attention=True)
    expected = class_maps(output.class_attention, output.head_gates, grid_size=output.grid_size, image_size=(32, 32),
                          blocks=[1, 2], head_weighting="mean")[0]
    got = browser.class_maps(0, size=(32, 32), block_range=(1, 2), head_weighting="mean")
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(browser.class_maps(0, size=(32, 32), block_range=(1, 2), head_weighting="mean",
                                                  classes=[4]), expected[4:5])
    torch.testing.assert_close(browser.cached(0).probs, output.logits[0].sigmoid())
    assert browser.head_gates(0).tolist() == GATES.tolist()


def test_render_changes_with_class_blocks_and_head(browser):
    base = browser.render(0, class_index=0)
    for panel in (base.image, base.ground_truth, base.pseudo_mask, base.class_map):
        assert panel.shape == (64, 64, 3) and panel.dtype == np.uint8
    other_class = browser.render(0, class_index=1)
    assert not np.array_equal(other_class.class_map, base.class_map)
    # The class choice only changes the map: image, truth and pseudo-mask stay.
    for name in ("image", "ground_truth", "pseudo_mask"):
        assert np.array_equal(getattr(other_class, name), getattr(base, name))
    first_block = browser.render(0, class_index=0, block_range=(0, 0))
    two_blocks = browser.render(0, class_index=0, block_range=(0, 1))
    assert not np.array_equal(first_block.class_map, two_blocks.class_map)
    head0 = browser.render(0, class_index=0, head_weighting=0)
    head2 = browser.render(0, class_index=0, head_weighting=2)
    assert not np.array_equal(head0.class_map, head2.class_map)
    assert not np.array_equal(browser.render(1, class_index=0).image, base.image)
    # Opacity 0 shows the image alone.
    clear = browser.render(0, class_index=0, opacity=0.0)
    assert np.abs(clear.class_map.astype(int) - base.image.astype(int)).max() <= 1


def test_pseudo_mask_uses_dataset_coding(browser, dataset):
    labels = browser.pseudo_mask(0)
    assert labels.shape == (32, 32)
    # With background: 0 = background, k + 1 = class k, only predicted classes appear.
    selected = select_classes(browser.cached(0).probs[None])[0]
    allowed = {0} | {int(c) + 1 for c in torch.nonzero(selected).flatten()}
    assert set(np.unique(labels).tolist()) <= allowed
    # A background score above every normalised score (max 1) leaves only background.
    assert (browser.pseudo_mask(0, background_score=1.0) == 0).all()
    assert dataset.has_background


def test_gate_map_marks_closed_heads(browser):
    assert browser.contributing_heads(0).tolist() == (GATES > 0).tolist()
    chosen = browser.contributing_heads(0, block_range=(1, 2), head_weighting="mean")
    assert chosen.tolist() == [[False] * 4, [True] * 4, [True] * 4]
    chosen = browser.contributing_heads(0, head_weighting=3)
    assert chosen.tolist() == [[False, False, False, True]] * 3
    # Every head of block 2 is pruned: its gate-weighted map is empty, a head's own map is not.
    assert browser.render(0, class_index=0, block_range=(2, 2)).empty_map
    assert not browser.render(0, class_index=0, block_range=(2, 2), head_weighting=1).empty_map
    assert not browser.render(0, class_index=0).empty_map

    picked = []
    grid = GateGrid(3, 4, lambda block, head: picked.append((block, head)))
    grid.update(GATES, browser.contributing_heads(0, block_range=(1, 1), head_weighting=2))
    for block in range(3):
        for head in range(4):
            button = grid.buttons[block][head]
            closed = GATES[block, head] == 0
            assert (button.description == "✕") == closed
            assert ("kyam-gate-closed" in button._dom_classes) == closed
            assert ("kyam-gate-open" in button._dom_classes) == (not closed)
            assert ("kyam-gate-chosen" in button._dom_classes) == ((block, head) == (1, 2))
            assert f"kyam-gate-b{block}-h{head}" in button._dom_classes
    grid.buttons[2][1].click()
    assert picked == [(2, 1)]
    with pytest.raises(ValueError, match="expected shape"):
        grid.update(GATES[:2], GATES[:2] > 0)


def test_class_rows_mark_predicted_and_ground_truth(browser, dataset):
    rows = browser.class_rows(0)
    probs = browser.cached(0).probs
    selected = select_classes(probs[None])[0]
    labels = dataset[0]["labels"]
    assert [row.name for row in rows] == dataset.class_names
    for row in rows:
        assert row.prob == pytest.approx(float(probs[row.index]))
        assert row.predicted == bool(selected[row.index])
        assert row.in_ground_truth == bool(labels[row.index])
        assert ("✓" in row.label) == row.predicted and ("●" in row.label) == row.in_ground_truth
    assert ClassRow(index=0, name="disk", prob=0.934, predicted=True, in_ground_truth=False).label == "0.93  disk  ✓"
    assert ClassRow(index=1, name="ring", prob=0.05, predicted=False, in_ground_truth=True).label == "0.05  ring  ●"


def test_dataset_without_background(tmp_path):
    generate_regions(tmp_path / "regions", num_train=2, num_val=3, image_size=32)
    regions = build_dataset("regions", tmp_path / "regions", "val", image_size=32)
    torch.manual_seed(0)
    model = KyamViT(ModelConfig(num_classes=8, in_channels=13, image_size=(32, 32), patch_size=8, embed_dim=32,
                                depth=2, num_heads=2))
    browser = AttentionBrowser(model, regions, display_size=64)
    panels = browser.render(0, class_index=2)
    assert panels.image.shape == (64, 64, 3)
    # Without background every pixel gets one of the drawn classes (nearest-label fill, no 0 = background).
    selected = torch.nonzero(select_classes(browser.cached(0).probs[None])[0]).flatten().tolist()
    assert set(np.unique(panels.pseudo_labels).tolist()) <= set(selected)
    assert not np.array_equal(browser.render(0, class_index=3).class_map, panels.class_map)


def test_cam_classifier_maps_ignore_blocks_and_heads(dataset):
    torch.manual_seed(0)
    model = KyamViT(ModelConfig(num_classes=6, image_size=(32, 32), patch_size=8, embed_dim=32, depth=2,
                                num_heads=2, classifier="cam", use_reg_token=False, use_head_gates=False))
    browser = AttentionBrowser(model, dataset, display_size=64)
    assert not browser.uses_attention and browser.cached(0).class_attention is None
    base = browser.render(0, class_index=0)
    assert np.array_equal(browser.render(0, class_index=0, block_range=(1, 1), head_weighting=1).class_map,
                          base.class_map)
    assert not np.array_equal(browser.render(0, class_index=1).class_map, base.class_map)
    assert not browser.contributing_heads(0).any()


def test_bad_views_are_rejected(browser):
    with pytest.raises(ValueError, match="class_index"):
        browser.render(0, class_index=6)
    with pytest.raises(ValueError, match="block_range"):
        browser.render(0, class_index=0, block_range=(2, 1))
    with pytest.raises(IndexError, match="out of range"):
        browser.cached(99)
    with pytest.raises(KeyError, match="nope"):
        browser.index_of("nope")


def save_run(run_dir, data_root, model: KyamViT):
    train_config = TrainConfig(dataset="shapes", data_root=str(data_root), image_size=(32, 32), model_size="tiny",
                               patch_size=8, out_dir=str(run_dir)).to_dict()
    save_checkpoint(run_dir / "model", model, train_config=train_config)
    return train_config


def test_find_and_resolve_checkpoints(tmp_path, data_root):
    run = tmp_path / "runs" / "quick" / "full_seed0"
    model = make_model()
    save_run(run, data_root, model)
    for epoch in (1, 2):
        save_checkpoint(run / "checkpoints" / f"epoch_{epoch:04d}", model)
    hidden = run / ".model.abc.tmp"
    hidden.mkdir()
    (hidden / "model.safetensors").write_bytes(b"")
    found = find_checkpoints(tmp_path / "runs")
    assert [p.relative_to((tmp_path / "runs").resolve()).as_posix() for p in found] == [
        "quick/full_seed0/checkpoints/epoch_0001", "quick/full_seed0/checkpoints/epoch_0002", "quick/full_seed0/model"]
    assert resolve_checkpoint(run) == run / "model"
    assert resolve_checkpoint(run / "model") == run / "model"
    save_checkpoint(tmp_path / "other" / "checkpoints" / "epoch_0003", model)
    assert resolve_checkpoint(tmp_path / "other") == tmp_path / "other" / "checkpoints" / "epoch_0003"
    with pytest.raises(FileNotFoundError, match="empty: no checkpoint found"):
        resolve_checkpoint(tmp_path / "empty")
    save_checkpoint(tmp_path / "nodata" / "model", model)  # no training config: the dataset is unknown
    with pytest.raises(ValueError, match=r"config.json: field 'train.dataset' is missing"):
        AttentionBrowser.from_run(tmp_path / "nodata")


def shown(panel) -> bytes:
    return bytes(panel[1].value)


def test_app_wiring(tmp_path, data_root, dataset):
    run = tmp_path / "run"
    save_run(run, data_root, make_model())
    write_json(run / "eval" / "metrics.json", {"background_score": 0.35})
    app = BrowserApp(run, runs_dir=tmp_path, display_size=64)
    assert "kyam-error" not in app.status._dom_classes, app.status.value
    assert app.run.label == "run/model"
    assert app.background_score.value == pytest.approx(0.35)
    browser = app.browser
    probs = browser.cached(0).probs
    assert app.classes.value == int(probs.argmax())  # the first view shows the most probable class
    assert app.blocks.value == (0, 2) and app.index.max == len(dataset) - 1
    map_png, image_png = shown(app.map_panel), shown(app.image_panel)
    assert map_png.startswith(PNG_SIGNATURE) and image_png.startswith(PNG_SIGNATURE)
    assert app.last_render_seconds < 1.0

    app.index.value = 1
    assert app.image_id.value == dataset.ids[1]
    assert shown(app.map_panel) != map_png and shown(app.image_panel) != image_png
    app.image_id.value = dataset.ids[3]
    assert app.index.value == 3
    image_png, map_png = shown(app.image_panel), shown(app.map_panel)
    app.classes.value = (app.classes.value + 1) % 6
    assert shown(app.map_panel) != map_png and shown(app.image_panel) == image_png

    map_png = shown(app.map_panel)
    app.gate_grid.buttons[1][2].click()
    assert (app.weighting.value, app.head.value, app.blocks.value) == ("head", 2, (1, 1))
    assert not app.head.disabled
    assert shown(app.map_panel) != map_png
    chosen = [(b, h) for b in range(3) for h in range(4)
              if "kyam-gate-chosen" in app.gate_grid.buttons[b][h]._dom_classes]
    assert chosen == [(1, 2)]

    app.image_id.value = "no-such-id"
    assert "kyam-error" in app.status._dom_classes and "no-such-id" in app.status.value
    app.index.value = 0
    assert "kyam-error" not in app.status._dom_classes
