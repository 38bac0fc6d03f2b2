"""`python -m kyam_lib.segmentation`: train a segmentation model, or write its predicted masks.

    python -m kyam_lib.segmentation --masks ground_truth --out runs/seg_full
    python -m kyam_lib.segmentation --run_dir runs/voc --out runs/voc_seg            # the classifier run's
        # dataset, data_root, splits, image size and loader options; masks <run>/eval/pseudo_masks/<split>
    python -m kyam_lib.segmentation --run_dir runs/voc --preset paper --out runs/voc_seg   # DeepLabV3-R101
    python -m kyam_lib.segmentation --config seg.json --out runs/seg --resume        # continue the latest checkpoint
    python -m kyam_lib.segmentation predict --seg_dir runs/voc_seg --split test      # see .predict

Precedence: SegConfig defaults < --preset (its segmenter) < --run_dir < --config < --key value.
Without an explicit --train_split, a mask folder ``.../pseudo_masks/<split>`` sets the split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ..checkpoint import CheckpointError
from ..config import ConfigError, TrainConfig, parse_overrides
from ..data import DatasetError
from ..io import read_json
from .config import GROUND_TRUTH, INHERITED_DATA_FIELDS, PRESET_SEGMENTERS, SegConfig
from .predict import predict_masks
from .training import train_segmentation

__all__ = ["INHERITED_FIELDS", "inherit_from_run", "config_from_args", "main"]

# What a segmentation run takes over from the classifier run whose pseudo-masks it trains on.
INHERITED_FIELDS = (*INHERITED_DATA_FIELDS, "patch_size", "model_size", "seed")


def inherit_from_run(run_dir: str | Path) -> dict[str, Any]:
    """SegConfig fields of classifier run `run_dir`: its data fields, and its pseudo-masks as `masks`.

    The masks are ``<run>/eval/pseudo_masks/<train_split>`` when the evaluation wrote that split,
    else ``<run>/eval/pseudo_masks/train`` (the classifier trained on VOC train_aug; the masks are
    made for train).
    """
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_json(run_dir / "config.json")
    values = {name: getattr(cfg, name) for name in INHERITED_FIELDS}
    masks_root = run_dir / "eval" / "pseudo_masks"
    for split in (cfg.train_split, "train", "training"):
        if (masks_root / split).is_dir():
            values.update(masks=str(masks_root / split), train_split=split)
            break
    else:
        raise ConfigError(f"{masks_root}: no pseudo-masks of split {cfg.train_split!r} or 'train'; run "
                          f"`python -m kyam_lib.evaluate --run_dir {run_dir}` first, or pass --masks")
    return values


def config_from_args(argv: Sequence[str] | None = None) -> tuple[SegConfig, bool]:
    """(config, resume) from the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m kyam_lib.segmentation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON file of SegConfig fields")
    parser.add_argument("--out", help="output directory (SegConfig.out_dir)")
    parser.add_argument("--run_dir", help="classifier run to inherit data settings and pseudo-masks from")
    parser.add_argument("--preset", help=f"training preset whose segmenter to use ({PRESET_SEGMENTERS})")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    args, rest = parser.parse_known_args(argv)
    values: dict[str, Any] = {}
    if args.preset:
        if args.preset not in PRESET_SEGMENTERS:
            raise ConfigError(f"--preset: unknown preset {args.preset!r}; known: {sorted(PRESET_SEGMENTERS)}")
        values["architecture"] = PRESET_SEGMENTERS[args.preset]
    if args.run_dir:
        values.update(inherit_from_run(args.run_dir))
    if args.config:
        loaded = read_json(args.config)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config}: expected a JSON object of SegConfig fields")
        SegConfig.from_dict({**SegConfig().to_dict(), **loaded}, source=args.config)  # names the file on error
        values.update(loaded)
    given = parse_overrides(rest)
    values.update(given)
    masks = Path(str(values.get("masks", GROUND_TRUTH)))
    if "train_split" not in given and values.get("masks", GROUND_TRUTH) != GROUND_TRUTH \
            and masks.parent.name == "pseudo_masks":
        values["train_split"] = masks.name
    if args.out:
        values["out_dir"] = args.out
    return SegConfig.from_dict({**SegConfig().to_dict(), **values}), args.resume


def _predict_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kyam_lib.segmentation predict")
    parser.add_argument("--seg_dir", required=True, help="a trained segmentation run")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", default=None, help="default <seg_dir>/predictions")
    parser.add_argument("--data_root", default="")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        result = predict_masks(args.seg_dir, split=args.split, out_dir=args.out, data_root=args.data_root,
                               device=args.device)
    except (ConfigError, DatasetError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: {result['images']} masks of split {result['split']} in {result['mask_dir']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        return _predict_main(argv[1:])
    try:
        cfg, resume = config_from_args(argv)
        metrics = train_segmentation(cfg, resume=resume)
    except (ConfigError, DatasetError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: {cfg.out_dir}/metrics.json  {metrics['supervision']} supervision  "
          f"val mIoU {metrics['miou']:.3f}  pixel acc {metrics['pixel_acc']:.3f}")
    return 0
