"""Downstream segmentation: a model trained on pseudo-masks (or on ground truth), scored on val.

The paper's last step: the pseudo-masks become training targets of an ordinary segmentation
model, whose val mIoU is compared with the same model trained on the ground-truth masks (full
supervision). The val split is always scored against ground truth.

Models (`SegConfig.architecture`): "vit", a timm ViT + light decoder, the CPU default for the
embedded data (smoke/quick/full); "deeplabv3_resnet50" / "deeplabv3_resnet101", torchvision's
DeepLabV3 with an ImageNet ResNet encoder (a local weight file or a torchvision weights name),
the `paper` preset's segmenter. Modules: config, models, data, training (checkpoints, exact
resume), predict (masks at image size; the VOC server layout), cli (`python -m kyam_lib.segmentation`).
"""
from .cli import config_from_args, inherit_from_run, main
from .config import (ARCHITECTURES, GROUND_TRUTH, INHERITED_DATA_FIELDS, PRESET_SEGMENTERS, SegConfig, SegModelConfig,
                     seg_model_config_for)
from .data import PseudoMaskDataset, build_seg_datasets, mask_class_names
from .models import (DeepLabSegmenter, SegmentationViT, build_seg_model, init_backbone_from_timm,
                     init_deeplab_backbone, load_segmentation_model, save_segmentation_model)
from .predict import VOC_SERVER_DIR, predict_masks
from .training import compare_pseudo_vs_full, evaluate_segmentation, train_segmentation

__all__ = [
    "ARCHITECTURES", "GROUND_TRUTH", "INHERITED_DATA_FIELDS", "PRESET_SEGMENTERS", "SegConfig", "SegModelConfig",
    "seg_model_config_for",
    "SegmentationViT", "DeepLabSegmenter", "build_seg_model", "init_backbone_from_timm", "init_deeplab_backbone",
    "PseudoMaskDataset", "build_seg_datasets", "mask_class_names", "evaluate_segmentation", "train_segmentation",
    "save_segmentation_model", "load_segmentation_model", "compare_pseudo_vs_full", "predict_masks",
    "VOC_SERVER_DIR", "inherit_from_run", "config_from_args", "main",
]
