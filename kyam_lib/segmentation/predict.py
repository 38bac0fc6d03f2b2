"""Predicted masks of a trained segmentation run, at each image's own size, as palette PNGs.

    python -m kyam_lib.segmentation predict --seg_dir runs/seg --split val
    python -m kyam_lib.segmentation predict --seg_dir runs/seg --split test      # VOC: the server layout

Masks go to ``<out>/<split>/<id>.png`` (default out: ``<seg_dir>/predictions``); for VOC test, to
the layout the PASCAL evaluation server expects, ``<out>/results/VOC2012/Segmentation/comp6_test_cls/<id>.png``
(0 background, k = VOC class k; zip the ``results`` folder). Images need no masks (VOC test has none).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from tqdm.auto import tqdm

from ..data import KyamDataset
from ..data.palette import palette
from ..masks_io import save_pseudo_mask
from ..run_data import open_split
from ..runtime import resolve_device
from .config import SegConfig
from .models import load_segmentation_model

__all__ = ["VOC_SERVER_DIR", "ImagesOnly", "predict_masks"]

VOC_SERVER_DIR = Path("results") / "VOC2012" / "Segmentation" / "comp6_test_cls"


class ImagesOnly(Dataset):
    """The images of a kyam dataset at the model's input size, with their original (H, W); no masks read."""

    def __init__(self, dataset: KyamDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        base = self.dataset
        image = base._read_image(index)  # the loader's own decoder: the image alone, as for a split without masks
        size = base.image_size or image.shape[:2]
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        image_t = base.transform_for(tuple(size))(image_t)
        return {"image": image_t.as_subclass(Tensor).float(), "id": base.ids[index],
                "size": torch.tensor(image.shape[:2])}


@torch.no_grad()
def predict_masks(seg_dir: str | Path, *, split: str = "val", out_dir: str | Path | None = None,
                  data_root: str = "", server_layout: bool | None = None, batch_size: int = 8,
                  device: str = "auto") -> dict[str, Any]:
    """Write the run's predicted mask of every image of `split`; returns {"split", "images", "mask_dir"}.

    Logits are upsampled bilinearly from the model's input size to each image's own size before
    the argmax. server_layout (default: VOC test) writes the evaluation server's folder layout.
    """
    seg_dir = Path(seg_dir)
    model, stored = load_segmentation_model(seg_dir / "model")
    cfg = SegConfig.from_dict({**SegConfig().to_dict(), **(stored or {})}, source=str(seg_dir / "model"))
    if data_root:
        cfg = cfg.replace(data_root=data_root)
    target = torch.device(resolve_device(device))
    model = model.to(target).eval()
    dataset = open_split(cfg, split)
    if server_layout is None:
        server_layout = cfg.dataset == "voc" and split == "test"
    out_dir = Path(out_dir) if out_dir else seg_dir / "predictions"
    mask_dir = out_dir / VOC_SERVER_DIR if server_layout else out_dir / split
    colours = palette(256)
    loader = DataLoader(ImagesOnly(dataset), batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc=f"{split} predictions", leave=False, mininterval=2.0):
        logits = model(batch["image"].to(target)).float()
        for image_id, size, image_logits in zip(batch["id"], batch["size"].tolist(), logits):
            full = F.interpolate(image_logits[None], size=tuple(size), mode="bilinear", align_corners=False)
            mask = full[0].argmax(dim=0).to(torch.uint8).cpu().numpy()
            save_pseudo_mask(mask, mask_dir / f"{image_id}.png", colours)
    return {"split": split, "images": len(dataset), "mask_dir": str(mask_dir)}
