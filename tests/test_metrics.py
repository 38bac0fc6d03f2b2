import math
import warnings

import pytest
import torch
import torch.distributed as dist
from torchmetrics.classification import (MulticlassAccuracy, MulticlassJaccardIndex, MultilabelAccuracy,
                                         MultilabelAveragePrecision)

from kyam_lib.method.metrics import ConfusionMatrix, classifier_accuracy, mean_average_precision, sparsity_rate


def _hand_example() -> ConfusionMatrix:
    target = torch.tensor([[0, 0, 1, 1], [1, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 3]])
    matrix = ConfusionMatrix(4)
    matrix.update(pred, target)
    return matrix


def test_hand_computed_confusion_matrix():
    matrix = _hand_example()
    expected = torch.tensor([[1, 1, 0, 0],  # target 0: one right, one called 1
                             [0, 2, 1, 0],  # target 1: two right, one called 2
                             [0, 0, 1, 0],  # target 2: right
                             [0, 0, 0, 0]])  # target 3 never occurs; the 3 under 255 is ignored
    assert torch.equal(matrix.matrix, expected)
    assert matrix.matrix.dtype == torch.int64
    # IoU: class 0 1/(1+1), class 1 2/(2+1+1), class 2 1/(1+1), class 3 absent from both -> NaN
    iou = matrix.per_class_iou()
    torch.testing.assert_close(iou[:3], torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64))
    assert math.isnan(iou[3])
    assert matrix.miou() == pytest.approx(0.5)
    assert matrix.pixel_accuracy() == pytest.approx(4 / 6)


def test_class_only_in_prediction_counts_with_zero_iou():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([0, 0, 2]), torch.tensor([0, 0, 0]))
    torch.testing.assert_close(matrix.per_class_iou()[[0, 2]], torch.tensor([2 / 3, 0.0], dtype=torch.float64))
    assert matrix.miou() == pytest.approx(1 / 3)


def test_empty_matrix():
    matrix = ConfusionMatrix(3)
    assert math.isnan(matrix.miou()) and math.isnan(matrix.pixel_accuracy())
    matrix.update(torch.tensor([1, 2]), torch.tensor([255, 255]))
    assert int(matrix.matrix.sum()) == 0


def test_matches_torchmetrics_over_batches():
    generator = torch.manual_seed(0)
    num_classes = 6
    ours = ConfusionMatrix(num_classes)
    jaccard = MulticlassJaccardIndex(num_classes=num_classes, average="macro", ignore_index=255)
    accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro", ignore_index=255)
    for _ in range(3):
        # class 5 never appears in target or prediction: the convention on absent classes matters
        target = torch.randint(0, 5, (2, 9, 11), generator=generator)
        target[torch.rand(target.shape, generator=generator) < 0.2] = 255
        pred = torch.where(torch.rand(target.shape, generator=generator) < 0.6, target.clamp(max=4),
                           torch.randint(0, 5, target.shape, generator=generator))
        pred[0, 0, :3] = 3
        ours.update(pred, target)
        jaccard.update(pred, target)
        accuracy.update(pred, target)
    assert ours.miou() == pytest.approx(float(jaccard.compute()), abs=1e-6)
    assert ours.pixel_accuracy() == pytest.approx(float(accuracy.compute()), abs=1e-6)
    per_class = MulticlassJaccardIndex(num_classes=num_classes, average="none", ignore_index=255)
    per_class.update(pred, target)
    single = ConfusionMatrix(num_classes)
    single.update(pred, target)
    torch.testing.assert_close(single.per_class_iou()[:5].float(), per_class.compute()[:5])


def test_out_of_range_values_are_named():
    matrix = ConfusionMatrix(4)
    with pytest.raises(ValueError, match="target: value 7 "):
        matrix.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="target: value -1 "):
        matrix.update(torch.tensor([0, 1]), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="pred: value 9 "):
        matrix.update(torch.tensor([0, 9]), torch.tensor([0, 1]))
    # a bad prediction under an ignored target is never counted, so it is not an error
    matrix.update(torch.tensor([0, 9]), torch.tensor([0, 255]))
    with pytest.raises(ValueError, match="same shape"):
        matrix.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="pred: expected an integer tensor"):
        matrix.update(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="collides"):
        ConfusionMatrix(4, ignore_index=2)


def test_merge_equals_one_pass_and_all_reduce_without_distributed_is_no_op():
    generator = torch.manual_seed(1)
    target = torch.randint(0, 4, (40,), generator=generator)
    pred = torch.randint(0, 4, (40,), generator=generator)
    whole, first, second = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    whole.update(pred, target)
    first.update(pred[:25], target[:25])
    second.update(pred[25:], target[25:])
    assert torch.equal(first.merge(second).matrix, whole.matrix)
    assert not dist.is_initialized()
    assert torch.equal(whole.all_reduce().matrix, first.matrix)
    with pytest.raises(ValueError, match="num_classes"):
        first.merge(ConfusionMatrix(5))


def test_all_reduce_single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        matrix = _hand_example()
        before = matrix.matrix.clone()
        assert torch.equal(matrix.all_reduce().matrix, before)
    finally:
        dist.destroy_process_group()


def test_to_dict():
    summary = _hand_example().to_dict(["bg", "cat", "dog", "cow"])
    assert summary["miou"] == pytest.approx(0.5)
    assert summary["pixel_accuracy"] == pytest.approx(4 / 6)
    assert summary["per_class_iou"]["cat"] == pytest.approx(0.5)
    assert summary["per_class_iou"]["cow"] is None
    assert summary["num_pixels"] == 6
    with pytest.raises(ValueError, match="expected 4 names"):
        _hand_example().to_dict(["a"])


def test_classifier_accuracy_hand_computed():
    probs = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.7, 0.4]])
    labels = torch.tensor([[1, 1, 1], [0, 1, 1]])
    # decisions [1,0,1] vs [1,1,1]: 2 right; [0,1,0] vs [0,1,1]: 2 right -> 4/6
    assert classifier_accuracy(probs, labels) == pytest.approx(4 / 6)
    # at 0.3 the second image's 0.4 turns on: 5/6
    assert classifier_accuracy(probs, labels, threshold=0.3) == pytest.approx(5 / 6)
    logits = torch.logit(probs.double())
    assert classifier_accuracy(logits, labels, from_logits=True) == pytest.approx(4 / 6)


def test_classifier_accuracy_matches_torchmetrics():
    generator = torch.manual_seed(2)
    logits = torch.randn(30, 7, generator=generator) * 2
    labels = (torch.rand(30, 7, generator=generator) < 0.3).long()
    reference = MultilabelAccuracy(num_labels=7, average="micro")
    assert classifier_accuracy(logits, labels) == pytest.approx(float(reference(logits, labels)), abs=1e-6)
    probs = logits.sigmoid()
    assert classifier_accuracy(probs, labels) == pytest.approx(float(reference(probs, labels)), abs=1e-6)
    # single label: top-1, labels as indices or one-hot
    targets = torch.randint(0, 7, (30,), generator=generator)
    top1 = MulticlassAccuracy(num_classes=7, average="micro")
    expected = float(top1(logits, targets))
    assert classifier_accuracy(logits, targets, multi_label=False) == pytest.approx(expected)
    one_hot = torch.nn.functional.one_hot(targets, 7)
    assert classifier_accuracy(logits, one_hot, multi_label=False) == pytest.approx(expected)


def test_mean_average_precision_hand_computed():
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    labels = torch.tensor([[1], [0], [1], [0]])
    # positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    assert mean_average_precision(scores, labels) == pytest.approx(5 / 6)
    # a tie between a positive and a negative forms one threshold: precision 1/2 there
    tied = torch.tensor([[0.5], [0.5]])
    assert mean_average_precision(tied, torch.tensor([[0], [1]])) == pytest.approx(0.5)


def test_mean_average_precision_matches_torchmetrics():
    generator = torch.manual_seed(3)
    # rounding makes ties
    scores = (torch.rand(40, 5, generator=generator) * 10).round() / 10
    labels = (torch.rand(40, 5, generator=generator) < 0.4).long()
    labels[0] = 1
    expected = float(MultilabelAveragePrecision(num_labels=5, average="macro")(scores, labels))
    assert mean_average_precision(scores, labels) == pytest.approx(expected, abs=1e-6)


def test_mean_average_precision_skips_classes_without_positives():
    generator = torch.manual_seed(4)
    scores = torch.rand(30, 4, generator=generator)
    labels = (torch.rand(30, 4, generator=generator) < 0.4).long()
    labels[:, 2] = 0
    labels[0, [0, 1, 3]] = 1
    # torchmetrics' macro average would count class 2 as AP 0; we leave it out of the mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_class = MultilabelAveragePrecision(num_labels=4, average="none")(scores, labels)
    expected = float(per_class[[0, 1, 3]].mean())
    assert mean_average_precision(scores, labels) == pytest.approx(expected, abs=1e-6)
    assert math.isnan(mean_average_precision(scores, torch.zeros_like(labels)))


def test_sparsity_rate():
    assert sparsity_rate(torch.tensor([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(0.75)
    assert sparsity_rate(torch.ones(12, 16)) == 0.0
    with pytest.raises(ValueError, match="head_gates"):
        sparsity_rate(torch.ones(4))
