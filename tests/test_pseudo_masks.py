import numpy as np
import pytest
import torch

from kyam_lib.method.metrics import ConfusionMatrix
from kyam_lib.method.pseudo_masks import (heatmap_overlay, masks_mean_threshold_background, masks_with_background,
                                   masks_without_background, nearest_label_fill, overlay, paint_ranks, pseudo_masks,
                                   select_classes, threshold_curve)
from benchmarks.reference import nearest_label_fill_bfs


def _strip_maps() -> torch.Tensor:
    """(1, 4, 1, 8): class 0 high on columns 0-1, class 1 on 1-2, class 2 on 7, class 3 (never selected) on 3-6."""
    maps = torch.zeros(1, 4, 1, 8)
    maps[0, 0, 0, 0:2] = 1.0
    maps[0, 1, 0, 1:3] = 2.0
    maps[0, 2, 0, 7] = 0.5
    maps[0, 3, 0, 3:7] = 9.0
    return maps


SELECTED = torch.tensor([[True, True, True, False]])


# --- class selection -------------------------------------------------------------------------------

def test_select_classes_threshold_and_fallback():
    probs = torch.tensor([[0.9, 0.5, 0.49], [0.1, 0.3, 0.2]])
    selected = select_classes(probs)
    # >= threshold; the second image predicts nothing and falls back to its top class (1)
    assert selected.tolist() == [[True, True, False], [False, True, False]]
    assert select_classes(probs, threshold=0.95).tolist() == [[True, False, False], [False, True, False]]


def test_select_classes_from_image_labels():
    probs = torch.tensor([[0.9, 0.5, 0.4], [0.1, 0.3, 0.2]])
    labels = torch.tensor([[0, 0, 1], [0, 0, 0]])
    # image labels taken as is, including an image without labels
    assert select_classes(probs, labels, source="labels").tolist() == [[False, False, True], [False, False, False]]
    with pytest.raises(ValueError, match="labels: required"):
        select_classes(probs, source="labels")
    with pytest.raises(ValueError, match="0 or 1"):
        select_classes(probs, labels * 2, source="labels")
    with pytest.raises(ValueError, match="source"):
        select_classes(probs, labels, source="oracle")


def test_paint_ranks_ascending_with_stable_ties():
    probs = torch.tensor([[0.7, 0.2, 0.7, 0.9]])
    ranks = paint_ranks(probs, torch.tensor([[True, True, True, False]]))
    # 0.2 first; the two 0.7 keep class order (0 before 2); class 3 not selected
    assert ranks.tolist() == [[1, 0, 2, -1]]


# --- rule (a): no background -------------------------------------------------------------------

def test_without_background_order_overlap_and_fill():
    # masks: class 0 on 0-1, class 1 on 1-2 (overlap at 1), class 2 on 7; columns 3-6 unassigned.
    # fill: 3 and 4 are closer to column 2, 5 and 6 closer to column 7.
    probs = torch.tensor([[0.6, 0.8, 0.7, 0.99]])
    mask = masks_without_background(_strip_maps(), probs, SELECTED)
    assert mask.dtype == torch.int64 and mask.shape == (1, 1, 8)
    assert mask[0, 0].tolist() == [0, 1, 1, 1, 1, 2, 2, 2]
    # the more probable class wins the overlap
    probs = torch.tensor([[0.9, 0.8, 0.7, 0.99]])
    assert masks_without_background(_strip_maps(), probs, SELECTED)[0, 0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2]


def test_without_background_ties_go_to_higher_class_index():
    probs = torch.tensor([[0.8, 0.8, 0.7, 0.0]])
    assert masks_without_background(_strip_maps(), probs, SELECTED)[0, 0, 1] == 1


def test_without_background_2d_fill():
    maps = torch.zeros(1, 2, 5, 5)
    maps[0, 0, 0, 0] = 1.0  # class 0 at the top-left corner
    maps[0, 1, 4, 3] = maps[0, 1, 3, 4] = 1.0  # class 1 at two pixels near the bottom-right corner
    mask = masks_without_background(maps, torch.tensor([[0.9, 0.8]]), torch.tensor([[True, True]]))[0]
    expected = torch.tensor([[0, 0, 0, 0, 1],
                             [0, 0, 0, 1, 1],
                             [0, 0, 1, 1, 1],
                             [0, 1, 1, 1, 1],
                             [1, 1, 1, 1, 1]])
    # every pixel has a unique nearest seed here (checked by the distances, no ties)
    assert torch.equal(mask, expected)


def test_without_background_guards():
    flat = torch.ones(2, 3, 4, 4)  # nothing is strictly above its mean: no pixel assigned
    probs = torch.tensor([[0.6, 0.9, 0.6], [0.7, 0.2, 0.7]])
    selected = torch.tensor([[True, True, False], [True, False, True]])
    mask = masks_without_background(flat, probs, selected)
    # image 0: most probable selected class; image 1: tie 0.7/0.7 -> the later-painted, higher index
    assert (mask[0] == 1).all() and (mask[1] == 2).all()
    # no class selected: the most probable class is used
    maps = _strip_maps()
    empty = torch.zeros(1, 4, dtype=torch.bool)
    mask = masks_without_background(maps, torch.tensor([[0.1, 0.2, 0.3, 0.05]]), empty)
    assert (mask == 2).all()


def test_without_background_batch_is_per_image():
    maps = torch.cat([_strip_maps(), _strip_maps().flip(-1)])
    probs = torch.tensor([[0.6, 0.8, 0.7, 0.0], [0.9, 0.8, 0.7, 0.0]])
    selected = SELECTED.expand(2, -1)
    batch = masks_without_background(maps, probs, selected)
    for index in range(2):
        single = masks_without_background(maps[index:index + 1], probs[index:index + 1], selected[:1])
        assert torch.equal(batch[index], single[0])
    # mirrored strip: class 0 on 6-7 wins its overlap with class 1 (5-6); class 2 at 0
    assert batch[1, 0].tolist() == [2, 2, 2, 1, 1, 1, 0, 0]


# --- nearest-label fill against references -----------------------------------------------------

def _brute_force_nearest(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean nearest assigned label per pixel, and where equidistant seeds disagree on it."""
    rows, cols = np.nonzero(labels >= 0)
    seed_labels = labels[rows, cols]
    grid_r, grid_c = np.indices(labels.shape)
    dist = (grid_r[..., None] - rows) ** 2 + (grid_c[..., None] - cols) ** 2
    nearest = dist == dist.min(axis=-1, keepdims=True)
    first = seed_labels[np.argmax(nearest, axis=-1)]
    ambiguous = (nearest & (seed_labels != first[..., None])).any(axis=-1)
    return first, ambiguous


def test_fill_agrees_with_references_on_random_grids():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(150):
        height, width = rng.integers(1, 14, size=2)
        density = rng.uniform(0.02, 0.4)
        labels = np.where(rng.random((height, width)) < density, rng.integers(0, 5, (height, width)), -1)
        if (labels < 0).all():
            continue
        brute, ambiguous = _brute_force_nearest(labels)
        fast = nearest_label_fill(labels)
        slow = nearest_label_fill_bfs(labels)
        # assigned pixels keep their labels
        assert (fast[labels >= 0] == labels[labels >= 0]).all()
        assert (fast[~ambiguous] == brute[~ambiguous]).all()
        assert (slow[~ambiguous] == brute[~ambiguous]).all()
        checked += int((~ambiguous & (labels < 0)).sum())
    assert checked > 1000


def test_fill_rejects_no_assigned_pixel():
    with pytest.raises(ValueError, match="no assigned pixel"):
        nearest_label_fill(np.full((3, 3), -1))
    with pytest.raises(ValueError, match="no assigned pixel"):
        nearest_label_fill_bfs(np.full((3, 3), -1))


def test_without_background_fill_matches_brute_force():
    generator = torch.manual_seed(5)
    maps = torch.rand(3, 4, 9, 12, generator=generator) ** 4
    probs = torch.rand(3, 4, generator=generator)
    selected = torch.rand(3, 4, generator=generator) < 0.6
    selected[:, 0] = True
    mask = masks_without_background(maps, probs, selected)
    painted = masks_mean_threshold_background(maps, probs, selected) - 1  # -1 = unassigned
    for index in range(3):
        brute, ambiguous = _brute_force_nearest(painted[index].numpy())
        assert (mask[index].numpy()[~ambiguous] == brute[~ambiguous]).all()


# --- rules (b) and (c): with background --------------------------------------------------------

def _two_class_maps() -> torch.Tensor:
    maps = torch.zeros(1, 2, 1, 4)
    maps[0, 0, 0] = torch.tensor([0.0, 2.0, 4.0, 4.0])  # normalised [0, .5, 1, 1]
    maps[0, 1, 0] = torch.tensor([4.0, 2.0, 1.0, 0.0])  # normalised [1, .5, .25, 0]
    return maps


def test_with_background_hand_computed():
    both = torch.tensor([[True, True]])
    mask = masks_with_background(_two_class_maps(), both, background_score=0.4)
    # column 1: classes tie at 0.5 -> lower index (class 0 -> label 1)
    assert mask.dtype == torch.int64 and mask[0, 0].tolist() == [2, 1, 1, 1]
    # t equal to the best score: background wins ties
    assert masks_with_background(_two_class_maps(), both, background_score=0.5)[0, 0].tolist() == [2, 0, 1, 1]
    # an unselected class never appears
    only_first = torch.tensor([[True, False]])
    assert masks_with_background(_two_class_maps(), only_first, background_score=0.4)[0, 0].tolist() == [0, 1, 1, 1]
    # nothing selected: all background
    assert (masks_with_background(_two_class_maps(), ~both, background_score=0.0) == 0).all()


def test_with_background_is_scale_invariant_and_guards_constant_maps():
    maps = _two_class_maps()
    both = torch.tensor([[True, True]])
    scaled = maps * 7.0 + 3.0
    assert torch.equal(masks_with_background(maps, both, background_score=0.3),
                       masks_with_background(scaled, both, background_score=0.3))
    constant = torch.full((1, 2, 3, 3), 5.0)
    assert (masks_with_background(constant, both, background_score=0.1) == 0).all()


def test_mean_threshold_background_hand_computed():
    probs = torch.tensor([[0.6, 0.8, 0.7, 0.99]])
    mask = masks_mean_threshold_background(_strip_maps(), probs, SELECTED)
    assert mask[0, 0].tolist() == [1, 2, 2, 0, 0, 0, 0, 3]


def test_mean_threshold_is_strict():
    # a pixel exactly at the mean is not foreground; a flat map assigns nothing
    maps = torch.tensor([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]]).view(1, 2, 1, 3)
    probs, selected = torch.tensor([[0.9, 0.8]]), torch.tensor([[True, True]])
    assert masks_mean_threshold_background(maps, probs, selected)[0, 0].tolist() == [0, 0, 1]


def test_dispatch():
    probs = torch.tensor([[0.6, 0.8, 0.7, 0.99]])
    assert torch.equal(pseudo_masks(_strip_maps(), probs, SELECTED, rule="no_background"),
                       masks_without_background(_strip_maps(), probs, SELECTED))
    assert torch.equal(pseudo_masks(_strip_maps(), probs, SELECTED, rule="background_score", background_score=0.2),
                       masks_with_background(_strip_maps(), SELECTED, background_score=0.2))
    with pytest.raises(ValueError, match="background_score: required"):
        pseudo_masks(_strip_maps(), probs, SELECTED, rule="background_score")
    with pytest.raises(ValueError, match="rule"):
        pseudo_masks(_strip_maps(), probs, SELECTED, rule="crf")


def test_threshold_curve_matches_one_mask_per_threshold():
    generator = torch.manual_seed(6)
    num_maps = 4
    maps = torch.rand(3, num_maps, 10, 9, generator=generator)
    maps[1, 2] = 0.3  # a constant map
    selected = torch.rand(3, num_maps, generator=generator) < 0.6
    selected[2] = False  # an image with nothing selected
    targets = torch.randint(0, num_maps + 1, (3, 10, 9), generator=generator)
    targets[torch.rand(targets.shape, generator=generator) < 0.1] = 255
    # unsorted, repeated, and exactly on normalised values 0 and 1
    thresholds = [0.5, 0.0, 0.9, 0.25, 0.5, 1.0, -0.1]
    curve = threshold_curve(maps, selected, targets, thresholds, num_maps + 1)
    assert curve.shape == (len(thresholds), num_maps + 1, num_maps + 1) and curve.dtype == torch.int64
    for index, t in enumerate(thresholds):
        matrix = ConfusionMatrix(num_maps + 1)
        matrix.update(masks_with_background(maps, selected, background_score=t), targets)
        assert torch.equal(curve[index], matrix.matrix), t


def test_threshold_curve_validation():
    maps, selected = _two_class_maps(), torch.tensor([[True, True]])
    targets = torch.zeros(1, 1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="num_classes: expected C \\+ 1 = 3"):
        threshold_curve(maps, selected, targets, [0.5], 2)
    with pytest.raises(ValueError, match="targets: value 7"):
        threshold_curve(maps, selected, targets + 7, [0.5], 3)
    with pytest.raises(ValueError, match="targets: expected shape"):
        threshold_curve(maps, selected, targets[0], [0.5], 3)


def test_shape_validation():
    with pytest.raises(ValueError, match="class_maps"):
        masks_with_background(torch.rand(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), background_score=0.5)
    with pytest.raises(ValueError, match="probs: expected shape \\(1, 4\\)"):
        masks_without_background(_strip_maps(), torch.rand(1, 3), SELECTED)


# --- figures -----------------------------------------------------------------------------

def test_default_palette_is_voc():
    mask = np.array([[0, 1, 12, 15, 255]])
    painted = overlay(np.zeros((1, 5, 3)), mask, alpha=1.0) * 255
    # background black, aeroplane, dog, person; void (255) drawn white
    expected = [[0, 0, 0], [128, 0, 0], [64, 0, 128], [192, 128, 128], [255, 255, 255]]
    assert np.allclose(painted[0], expected)


def test_overlays():
    image = np.full((2, 3, 3), 0.5)
    mask = np.array([[0, 1, 2], [255, 1, 0]])
    assert np.allclose(overlay(image, mask, alpha=0.0), image)
    painted = overlay(image, mask, alpha=1.0)
    assert np.allclose(painted[0, 1], [128 / 255, 0, 0]) and np.allclose(painted[1, 0], [1, 1, 1])
    half = overlay(image, torch.as_tensor(mask), alpha=0.5)
    assert np.allclose(half[0, 0], [0.25, 0.25, 0.25])
    heat = heatmap_overlay(image, np.arange(6.0).reshape(2, 3), alpha=0.6)
    assert heat.shape == (2, 3, 3) and heat.min() >= 0 and heat.max() <= 1
    assert np.allclose(heatmap_overlay(image, np.ones((2, 3)), alpha=0.0), image)
    with pytest.raises(ValueError, match="image"):
        overlay(np.zeros((3, 3, 3)), mask)
