"""The attention-map browser: what each class token attends to, image by image (notebook 08).

`AttentionBrowser` holds a trained model and one dataset split. The forward pass of an image is
run once (`torch.no_grad`) and its probabilities, class-token attention and head gates are
cached; every view after that — another class, block range, head weighting or opacity — is
aggregated and drawn from the cache, so it never runs the model again. `render` returns the four
panels (image, ground truth, pseudo-mask, class-map overlay) as RGB arrays.

The widgets that drive it are in `kyam_lib.apps.browser`.
"""
from __future__ import annotations

import collections
import dataclasses
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Subset

from ..checkpoint import check_compatible, latest_checkpoint, load_checkpoint
from ..data import build_dataset, default_data_root, ensure_dataset
from ..data.palette import colorize, palette
from ..data.transforms import denormalize
from ..evaluate import class_maps_for
from ..io import read_json
from ..method.model import KyamOutput, KyamViT
from ..method.pseudo_masks import heatmap_overlay, masks_with_background, masks_without_background, select_classes

__all__ = ["CachedImage", "ClassRow", "Panels", "AttentionBrowser", "resolve_path", "resolve_checkpoint",
           "find_checkpoints", "png_bytes"]

HeadWeighting = Literal["gates", "mean"] | int
DEFAULT_BACKGROUND_SCORE = 0.5


@dataclasses.dataclass(frozen=True)
class CachedImage:
    """One image's forward pass and display data, computed once.

    image (H, W, 3) float in [0, 1] (the model input, denormalised); mask (H, W) int64 in the
    dataset's coding; labels (C,) bool ground-truth image labels; logits and probs (C,);
    head_gates (L, H); class_attention (L, H, C, P), or None for the "cam" classifier, whose
    patch_logits (C, P) are kept instead.
    """

    index: int
    image_id: str
    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    logits: Tensor
    probs: Tensor
    head_gates: Tensor
    class_attention: Tensor | None
    patch_logits: Tensor | None
    grid_size: tuple[int, int]

    def output(self) -> KyamOutput:
        """The cached forward as a batch of one, for the library's aggregation functions."""
        return KyamOutput(
            logits=self.logits[None],
            head_gates=self.head_gates,
            class_attention=None if self.class_attention is None else self.class_attention[None],
            patch_logits=None if self.patch_logits is None else self.patch_logits[None],
            grid_size=self.grid_size,
        )


@dataclasses.dataclass(frozen=True)
class ClassRow:
    """One entry of the class list: `predicted` = drawn in the pseudo-mask (`select_classes`)."""

    index: int
    name: str
    prob: float
    predicted: bool
    in_ground_truth: bool

    @property
    def label(self) -> str:
        """"0.93  disk  ✓ ●": probability first, so that names line up in a list."""
        marks = ("  ✓" if self.predicted else "") + ("  ●" if self.in_ground_truth else "")
        return f"{self.prob:.2f}  {self.name}{marks}"


@dataclasses.dataclass(frozen=True)
class Panels:
    """The four views of one image, each (S_h, S_w, 3) uint8 at display size."""

    image: np.ndarray
    ground_truth: np.ndarray
    pseudo_mask: np.ndarray
    class_map: np.ndarray
    pseudo_labels: np.ndarray      # (H, W) int64 pseudo-mask at model resolution, dataset coding
    empty_map: bool                # no head of the chosen blocks contributes (all pruned)


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 → PNG bytes (fast compression: these are re-sent on every change)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)


def _resize(image: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize an (H, W, 3) uint8 array to size (S_h, S_w)."""
    if image.shape[:2] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample=resample))


def project_root() -> Path:
    """The directory holding the `kyam_lib` package (the repository in a source checkout)."""
    return Path(__file__).resolve().parents[2]


def resolve_path(path: str | os.PathLike) -> Path:
    """A relative path that does not exist from the working directory is taken from the repository.

    Jupyter and Voilà start kernels in the notebook's folder, while run paths like
    ``runs/quick/full_seed0`` are written relative to the repository.
    """
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    candidate = project_root() / path
    return candidate if candidate.exists() else path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory of a run directory (``model/``, else the latest epoch) or of itself."""
    path = resolve_path(path)
    if (path / "model.safetensors").is_file():
        return path
    if (path / "model" / "model.safetensors").is_file():
        return path / "model"
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    raise FileNotFoundError(f"{path}: no checkpoint found (expected {path / 'model' / 'model.safetensors'}, "
                            f"{path / 'checkpoints'}/epoch_*, or a checkpoint directory); train one with "
                            f"`python -m kyam_lib.train --out {path}`")


def find_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Every checkpoint directory (holding ``model.safetensors``) under `root`, sorted.

    Hidden folders are skipped: checkpoints are written through hidden temporary directories.
    """
    root = resolve_path(root)
    if not root.is_dir():
        return []
    found = []
    for weights in root.rglob("model.safetensors"):
        relative = weights.parent.relative_to(root)
        if not any(part.startswith(".") for part in relative.parts):
            found.append(weights.parent.resolve())
    return sorted(found)


def _run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (``run/model`` or ``run/checkpoints/epoch_N``)."""
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent
    return checkpoint.parent


def _probabilities(model: KyamViT, logits: Tensor) -> Tensor:
    return logits.float().sigmoid() if model.config.multi_label else logits.float().softmax(dim=-1)


class AttentionBrowser:
    """A trained model and one dataset split, with a per-image cache of the forward pass.

    `dataset` items are dicts with ``image`` (C_in, H, W) normalised, ``mask`` (H, W), ``labels``
    (C,) and ``id``; it exposes ``class_names`` and ``has_background`` (a `Subset` of one works too).
    At most `cache_size` images are kept (least recently used first out).
    """

    def __init__(self, model: KyamViT, dataset: Any, *, display_size: int = 256, cache_size: int = 256,
                 background_score: float = DEFAULT_BACKGROUND_SCORE, name: str = "", split: str = "") -> None:
        if display_size < 16:
            raise ValueError(f"display_size: expected at least 16 pixels, got {display_size}")
        if cache_size < 1:
            raise ValueError(f"cache_size: expected at least 1, got {cache_size}")
        info = dataset.dataset if isinstance(dataset, Subset) else dataset
        if len(info.class_names) != model.config.num_classes:
            raise ValueError(f"dataset: {len(info.class_names)} classes, the model has {model.config.num_classes}")
        if len(dataset) == 0:
            raise ValueError("dataset: the split has no images")
        self.model = model.eval()
        self.dataset = dataset
        self.dataset_name: str = getattr(info, "name", type(info).__name__)
        self.class_names: list[str] = list(info.class_names)
        self.has_background: bool = bool(info.has_background)
        self.mean = getattr(info, "mean", None)
        self.std = getattr(info, "std", None)
        self.display_size = display_size
        self.cache_size = cache_size
        self.background_score = float(background_score)
        self.name = name
        self.split = split
        self.ids: list[str] = self._ids()
        self._index_of = {image_id: i for i, image_id in enumerate(self.ids)}
        self._cache: collections.OrderedDict[int, CachedImage] = collections.OrderedDict()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, split: str = "val", data_root: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", **kwargs: Any) -> "AttentionBrowser":
        """Load a run's checkpoint and the split of the dataset it was trained on.

        `split` "train"/"val" are the run's ``train_split``/``val_split``; other names are used as
        they are. The data root is `data_root`, else the run's (when it exists here), else
        ``$KYAM_DATA_ROOT``. The background score defaults to the one the run's evaluation
        chose (``eval/metrics.json``), else 0.5.
        """
        checkpoint = resolve_checkpoint(run_dir)
        loaded = load_checkpoint(checkpoint, map_location=device)
        train_config = loaded.train_config or {}
        dataset_name = train_config.get("dataset")
        if not dataset_name:
            raise ValueError(f"{checkpoint / 'config.json'}: field 'train.dataset' is missing; "
                             "the browser needs it to find the images")
        recorded_root = train_config.get("data_root") or ""
        if data_root:
            root = resolve_path(data_root)
        elif recorded_root and resolve_path(recorded_root).exists():
            root = resolve_path(recorded_root)
        else:
            root = Path(default_data_root())
        split_name = train_config.get(f"{split}_split", split) if split in ("train", "val") else split
        dataset = build_dataset(dataset_name, ensure_dataset(dataset_name, root), split_name,
                                image_size=tuple(loaded.model_config.image_size), augment=False)
        check_compatible(loaded.model_config, num_classes=len(dataset.class_names),
                         num_channels=dataset.num_channels, source=str(checkpoint))
        kwargs.setdefault("background_score", _evaluated_background_score(_run_dir_of(checkpoint)))
        return cls(loaded.model, dataset, name=str(checkpoint), split=split_name, **kwargs)

    def _ids(self) -> list[str]:
        info = self.dataset.dataset if isinstance(self.dataset, Subset) else self.dataset
        ids = getattr(info, "ids", None)
        if ids is None:
            return [str(i) for i in range(len(self.dataset))]
        if isinstance(self.dataset, Subset):
            return [str(ids[i]) for i in self.dataset.indices]
        return [str(image_id) for image_id in ids]

    # -- geometry -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_blocks(self) -> int:
        return self.model.config.depth

    @property
    def num_heads(self) -> int:
        return self.model.config.num_heads

    @property
    def uses_attention(self) -> bool:
        """False for the "cam" classifier, whose maps do not depend on blocks or heads."""
        return self.model.config.classifier != "cam"

    def index_of(self, image_id: str) -> int:
        """The dataset index of an image id; KeyError naming the id when it is not in the split."""
        try:
            return self._index_of[str(image_id).strip()]
        except KeyError:
            raise KeyError(f"image id {image_id!r} is not in split {self.split!r} ({len(self)} images)") from None

    def display_shape(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Display size keeping the aspect ratio, the longer side `display_size`."""
        height, width = image_hw
        scale = self.display_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    # -- the cache ------------------------------------------------------------------------
    @property
    def cached_indices(self) -> list[int]:
        return list(self._cache)

    def cached(self, index: int) -> CachedImage:
        """The forward pass of image `index`, run on first use only."""
        if not 0 <= index < len(self):
            raise IndexError(f"image index {index} out of range for {len(self)} images")
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        item = self.dataset[index]
        device = next(self.model.parameters()).device
        with torch.no_grad():
            output = self.model(item["image"][None].to(device), return_attention=self.uses_attention)
        logits = output.logits[0].float().cpu()
        entry = CachedImage(
            index=index,
            image_id=str(item.get("id", index)),
            image=denormalize(item["image"], mean=self.mean, std=self.std),
            mask=item["mask"].cpu().numpy().astype(np.int64),
            labels=item["labels"].cpu().numpy() > 0.5,
            logits=logits,
            probs=_probabilities(self.model, logits),
            head_gates=output.head_gates.float().cpu(),
            class_attention=None if output.class_attention is None else output.class_attention[0].float().cpu(),
            patch_logits=None if output.patch_logits is None else output.patch_logits[0].float().cpu(),
            grid_size=tuple(output.grid_size),
        )
        self._cache[index] = entry
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    # -- what to show ---------------------------------------------------------------------
    def class_rows(self, index: int) -> list[ClassRow]:
        """Every class with its probability, whether it is predicted, and whether it is in the ground truth."""
        entry = self.cached(index)
        selected = select_classes(entry.probs[None])[0]
        return [ClassRow(index=c, name=name, prob=float(entry.probs[c]), predicted=bool(selected[c]),
                         in_ground_truth=bool(entry.labels[c])) for c, name in enumerate(self.class_names)]

    def head_gates(self, index: int = 0) -> np.ndarray:
        """(L, H) evaluation gates (1 = open, 0 = pruned)."""
        return self.cached(index).head_gates.numpy()

    def block_list(self, block_range: tuple[int, int] | None) -> list[int]:
        """Inclusive (first, last) block range → block indices; None = all blocks."""
        if block_range is None:
            return list(range(self.num_blocks))
        first, last = (int(b) for b in block_range)
        if not 0 <= first <= last < self.num_blocks:
            raise ValueError(f"block_range: expected 0 <= first <= last < {self.num_blocks}, got {block_range}")
        return list(range(first, last + 1))

    def contributing_heads(self, index: int, *, block_range: tuple[int, int] | None = None,
                           head_weighting: HeadWeighting = "gates") -> np.ndarray:
        """(L, H) bool: the (block, head) pairs whose attention enters the class map."""
        chosen = np.zeros((self.num_blocks, self.num_heads), dtype=bool)
        if not self.uses_attention:
            return chosen
        blocks = self.block_list(block_range)
        if head_weighting == "gates":
            chosen[blocks] = self.head_gates(index)[blocks] > 0
        elif head_weighting == "mean":
            chosen[blocks] = True
        else:
            chosen[blocks, int(head_weighting)] = True
        return chosen

    def class_maps(self, index: int, *, size: tuple[int, int], block_range: tuple[int, int] | None = None,
                   head_weighting: HeadWeighting = "gates", classes: Sequence[int] | None = None) -> Tensor:
        """(C', S_h, S_w) aggregated class maps of image `index` from the cache (all classes, or `classes`)."""
        entry = self.cached(index)
        output = entry.output()
        if classes is not None:
            keep = torch.as_tensor(list(classes), dtype=torch.long)
            output = dataclasses.replace(
                output,
                class_attention=None if output.class_attention is None else output.class_attention[:, :, :, keep],
                patch_logits=None if output.patch_logits is None else output.patch_logits[:, keep],
            )
        blocks: Any = self.block_list(block_range) if self.uses_attention else "all"
        return class_maps_for(self.model, output, size, blocks=blocks, head_weighting=head_weighting)[0]

    def pseudo_mask(self, index: int, *, block_range: tuple[int, int] | None = None,
                    head_weighting: HeadWeighting = "gates", background_score: float | None = None) -> np.ndarray:
        """(H, W) int64 pseudo-mask at model resolution, in the dataset's mask coding.

        With background: normalised maps against the constant `background_score`; without: the
        mean-threshold rule. Classes are the predicted ones (`select_classes`).
        """
        entry = self.cached(index)
        maps = self.class_maps(index, size=entry.mask.shape, block_range=block_range,
                               head_weighting=head_weighting)[None]
        probs = entry.probs[None]
        selected = select_classes(probs)
        if self.has_background:
            score = self.background_score if background_score is None else float(background_score)
            labels = masks_with_background(maps, selected, background_score=score)
        else:
            labels = masks_without_background(maps, probs, selected)
        return labels[0].numpy()

    def render(self, index: int, *, class_index: int, block_range: tuple[int, int] | None = None,
               head_weighting: HeadWeighting = "gates", opacity: float = 0.5,
               background_score: float | None = None) -> Panels:
        """The four panels of image `index` for one view, from the cache."""
        if not 0 <= class_index < len(self.class_names):
            raise ValueError(f"class_index: expected 0..{len(self.class_names) - 1}, got {class_index}")
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity: expected a value in [0, 1], got {opacity}")
        entry = self.cached(index)
        shape = self.display_shape(entry.mask.shape)
        picture = _resize(_to_uint8(entry.image), shape, Image.Resampling.BILINEAR)
        pseudo = self.pseudo_mask(index, block_range=block_range, head_weighting=head_weighting,
                                  background_score=background_score)
        heat = self.class_maps(index, size=shape, block_range=block_range, head_weighting=head_weighting,
                               classes=[class_index])[0]
        overlay = heatmap_overlay(picture / 255.0, heat.numpy(), alpha=opacity)
        return Panels(
            image=picture,
            ground_truth=_resize(colorize(entry.mask), shape, Image.Resampling.NEAREST),
            pseudo_mask=_resize(colorize(pseudo), shape, Image.Resampling.NEAREST),
            class_map=_to_uint8(overlay),
            pseudo_labels=pseudo,
            empty_map=bool(heat.abs().max() == 0),
        )

    def legend_html(self, index: int, pseudo_labels: np.ndarray | None = None) -> str:
        """Colour swatches of the classes in the ground truth or the pseudo-mask of image `index`."""
        entry = self.cached(index)
        values = set(np.unique(entry.mask).tolist())
        if pseudo_labels is not None:
            values |= set(np.unique(pseudo_labels).tolist())
        colours = palette(256)
        names = (["background"] if self.has_background else []) + self.class_names
        items = []
        for value in sorted(values):
            name = "ignore" if value == 255 else (names[value] if value < len(names) else str(value))
            r, g, b = (int(v) for v in colours[value])
            items.append(f'<span style="white-space:nowrap;margin-right:10px"><span style="display:inline-block;'
                         f'width:12px;height:12px;background:rgb({r},{g},{b});border:1px solid #888;'
                         f'vertical-align:middle"></span> {html.escape(name)}</span>')
        return " ".join(items)


def _evaluated_background_score(run_dir: Path) -> float:
    """The background score the run's evaluation chose, else the default."""
    metrics = run_dir / "eval" / "metrics.json"
    if metrics.is_file():
        value = read_json(metrics).get("background_score")
        if isinstance(value, (int, float)):
            return float(value)
    return DEFAULT_BACKGROUND_SCORE
