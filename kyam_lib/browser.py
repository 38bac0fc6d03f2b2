"""The attention-map browser: what each class token attends to, image by image (notebook 08).

`AttentionBrowser` holds a trained model and one dataset split. The forward pass of an image is
run once (`torch.no_grad`) and its probabilities, class-token attention and head gates are
cached; every view after that — another class, block range, head weighting or opacity — is
aggregated and drawn from the cache, so it never runs the model again. `render` returns the four
panels (image, ground truth, pseudo-mask, class-map overlay) as RGB arrays.

`build_browser(run_dir)` wires ipywidgets to it: run/checkpoint and split pickers, an image
slider and id box, the class list (probability, ✓ predicted, ● in the ground truth), opacity,
block range, head weighting, and a clickable blocks × heads gate map where pruned heads are
marked and a click shows that head's own map. Panels are PNG bytes in `ipywidgets.Image`.
Widgets carry stable CSS classes (``kyam-map``, ``kyam-class``, ``kyam-gate-b{b}-h{h}``, ...)
so that a browser test can find them.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import html
import io
import os
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Subset

from .checkpoint import check_compatible, latest_checkpoint, load_checkpoint
from .data import build_dataset, default_data_root, ensure_dataset
from .data.palette import colorize, palette
from .data.transforms import denormalize
from .evaluate import class_maps_for
from .io import read_json
from .model import KyamOutput, KyamViT
from .pseudo_masks import heatmap_overlay, masks_with_background, masks_without_background, select_classes

__all__ = [
    "CachedImage",
    "ClassRow",
    "Panels",
    "AttentionBrowser",
    "resolve_path",
    "resolve_checkpoint",
    "find_checkpoints",
    "png_bytes",
    "GateGrid",
    "BrowserApp",
    "build_browser",
]

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
    return Path(__file__).resolve().parents[1]


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


# ------------------------------------------------------------------------------------------
# widgets
# ------------------------------------------------------------------------------------------
_OPEN_COLOUR = "#66bb6a"
_CLOSED_COLOUR = "#d6d6d6"
_CHOSEN_BORDER = "3px solid #1565c0"
_PLAIN_BORDER = "3px solid transparent"


class GateGrid:
    """The blocks × heads gate map as a grid of buttons; pruned heads show ✕ on grey.

    Buttons of heads that enter the current map get a blue border. `on_pick(block, head)` is
    called when a head is clicked.
    """

    def __init__(self, num_blocks: int, num_heads: int, on_pick) -> None:
        import ipywidgets as widgets

        self.num_blocks, self.num_heads = num_blocks, num_heads
        self.buttons: list[list[Any]] = []
        cells: list[Any] = [widgets.HTML("")]
        cells += [widgets.HTML(f"<center><small>h{h}</small></center>") for h in range(num_heads)]
        for block in range(num_blocks):
            cells.append(widgets.HTML(f"<small>block {block}</small>"))
            row = []
            for head in range(num_heads):
                button = widgets.Button(layout=widgets.Layout(width="34px", height="26px", padding="0"))
                button.add_class("kyam-gate")
                button.add_class(f"kyam-gate-b{block}-h{head}")
                button.on_click(lambda _, b=block, h=head: on_pick(b, h))
                row.append(button)
                cells.append(button)
            self.buttons.append(row)
        self.widget = widgets.GridBox(cells, layout=widgets.Layout(
            grid_template_columns=f"64px repeat({num_heads}, 36px)", grid_gap="2px", align_items="center"))
        self.widget.add_class("kyam-gates")

    def update(self, gates: np.ndarray, chosen: np.ndarray) -> None:
        """gates (L, H) in [0, 1]; chosen (L, H) bool: the heads in the current map."""
        if gates.shape != (self.num_blocks, self.num_heads) or chosen.shape != gates.shape:
            raise ValueError(f"gates/chosen: expected shape {(self.num_blocks, self.num_heads)}, "
                             f"got {gates.shape} and {chosen.shape}")
        for block, row in enumerate(self.buttons):
            for head, button in enumerate(row):
                is_open = bool(gates[block, head] > 0)
                button.description = "" if is_open else "✕"
                button.style.button_color = _OPEN_COLOUR if is_open else _CLOSED_COLOUR
                button.layout.border = _CHOSEN_BORDER if chosen[block, head] else _PLAIN_BORDER
                state = "open" if is_open else "pruned"
                button.tooltip = (f"block {block}, head {head}: {state} (gate {gates[block, head]:.2f}); "
                                  "click to show this head's own map")
                for name, flag in (("kyam-gate-open", is_open), ("kyam-gate-closed", not is_open),
                                   ("kyam-gate-chosen", bool(chosen[block, head]))):
                    if flag and name not in button._dom_classes:
                        button.add_class(name)
                    elif not flag and name in button._dom_classes:
                        button.remove_class(name)


class BrowserApp:
    """The widgets of the browser and their wiring to an `AttentionBrowser`.

    `widget` is the whole app. Every change re-renders from the cache; errors are shown in the
    status line (class ``kyam-error``) instead of vanishing in the kernel log.
    """

    def __init__(self, run_dir: str | os.PathLike, *, split: str = "val", runs_dir: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None, display_size: int = 256) -> None:
        import ipywidgets as widgets

        self._widgets = widgets
        self.data_root = data_root
        self.display_size = display_size
        self.browser: AttentionBrowser | None = None
        self.last_render_seconds = 0.0
        self._busy = False
        self._shown: int | None = None  # index whose image and ground truth are on screen
        checkpoint = resolve_checkpoint(run_dir).resolve()
        root = resolve_path(runs_dir).resolve() if runs_dir is not None else _run_dir_of(checkpoint).parent
        options = [(self._label(path, root), str(path)) for path in find_checkpoints(root)]
        if str(checkpoint) not in [value for _, value in options]:
            options.insert(0, (self._label(checkpoint, root), str(checkpoint)))

        layout = widgets.Layout
        self.title = widgets.HTML()
        self.run = widgets.Dropdown(options=options, value=str(checkpoint), description="run",
                                    layout=layout(width="520px"))
        self.split = widgets.Dropdown(options=[("val", "val"), ("train", "train")], description="split",
                                      layout=layout(width="180px"))
        if split not in ("train", "val"):
            self.split.options = [*self.split.options, (split, split)]
        self.split.value = split
        self.index = widgets.IntSlider(value=0, min=0, max=0, description="image", continuous_update=False,
                                       layout=layout(width="420px"))
        self.image_id = widgets.Text(description="id", continuous_update=False, layout=layout(width="240px"),
                                     placeholder="image id, Enter")
        self.classes = widgets.Select(options=[], description="class", rows=6,
                                      layout=layout(width="360px"))
        self.class_help = widgets.HTML("<small>✓ predicted (drawn in the pseudo-mask) · ● in the ground truth · "
                                       "number = predicted probability</small>")
        self.opacity = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="opacity",
                                           continuous_update=False)
        self.blocks = widgets.IntRangeSlider(value=(0, 0), min=0, max=0, description="blocks",
                                             continuous_update=False)
        self.weighting = widgets.ToggleButtons(options=[("gate-weighted", "gates"), ("all heads", "mean"),
                                                        ("one head", "head")], value="gates",
                                               description="heads", style={"button_width": "120px"})
        self.head = widgets.Dropdown(options=[("head 0", 0)], description="head", disabled=True,
                                     layout=layout(width="180px"))
        self.background_score = widgets.FloatSlider(value=DEFAULT_BACKGROUND_SCORE, min=0.0, max=1.0, step=0.05,
                                                    description="bg score", continuous_update=False)
        self.gate_box = widgets.VBox()
        self.gate_help = widgets.HTML("<small>gate map: green = open, grey ✕ = pruned head, blue border = "
                                      "heads in the current map; click a head to see its own map</small>")
        self.gate_grid: GateGrid | None = None
        self.image_panel = self._panel("image", "kyam-image")
        self.truth_panel = self._panel("ground truth", "kyam-truth")
        self.pseudo_panel = self._panel("pseudo-mask", "kyam-pseudo")
        self.map_panel = self._panel("class map", "kyam-map")
        self.legend = widgets.HTML()
        self.status = widgets.HTML()
        for control, name in ((self.run, "kyam-run"), (self.split, "kyam-split"), (self.index, "kyam-index"),
                              (self.image_id, "kyam-id"), (self.classes, "kyam-class"),
                              (self.opacity, "kyam-opacity"), (self.blocks, "kyam-blocks"),
                              (self.weighting, "kyam-weighting"), (self.head, "kyam-head"),
                              (self.background_score, "kyam-background"), (self.status, "kyam-status"),
                              (self.legend, "kyam-legend"), (self.title, "kyam-title")):
            control.add_class(name)

        controls = widgets.VBox([self.classes, self.class_help, self.opacity, self.blocks, self.weighting,
                                 self.head, self.background_score])
        panels = widgets.HBox([box for box, _ in (self.image_panel, self.truth_panel, self.pseudo_panel,
                                                   self.map_panel)])
        self.widget = widgets.VBox([
            self.title,
            widgets.HBox([self.run, self.split]),
            widgets.HBox([self.index, self.image_id]),
            widgets.HBox([controls, widgets.VBox([self.gate_box, self.gate_help])],
                         layout=layout(grid_gap="24px")),
            panels,
            self.legend,
            self.status,
        ])
        self.widget.add_class("kyam-browser")

        self.run.observe(lambda change: self._guarded(self._load), names="value")
        self.split.observe(lambda change: self._guarded(self._load), names="value")
        self.index.observe(lambda change: self._guarded(self._image_changed), names="value")
        self.image_id.observe(lambda change: self._guarded(self._id_entered), names="value")
        self.weighting.observe(lambda change: self._guarded(self._weighting_changed), names="value")
        for control in (self.classes, self.opacity, self.blocks, self.head, self.background_score):
            control.observe(lambda change: self._guarded(self._render), names="value")
        self._guarded(self._load)

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _label(path: Path, root: Path) -> str:
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)

    def _panel(self, caption: str, dom_class: str) -> tuple[Any, Any]:
        widgets = self._widgets
        image = widgets.Image(format="png", layout=widgets.Layout(width=f"{self.display_size}px"))
        image.add_class(dom_class)
        box = widgets.VBox([widgets.HTML(f"<b>{caption}</b>"), image])
        return box, image

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        """Set several controls without a render per change."""
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    def _guarded(self, action) -> None:
        if self._busy:
            return
        try:
            with self._hold():
                action()
        except Exception as err:  # the UI boundary: show the error where the user looks
            text = html.escape("".join(traceback.format_exception_only(type(err), err)).strip())
            details = html.escape(traceback.format_exc())
            self.status.value = (f'<span style="color:#b71c1c">⚠ {text}</span>'
                                 f"<details><summary>details</summary><pre>{details}</pre></details>")
            self.status.add_class("kyam-error")
        else:
            self.status.remove_class("kyam-error")

    # -- actions --------------------------------------------------------------------------
    def _load(self) -> None:
        """(Re)load the chosen checkpoint and split; reset the controls that depend on them."""
        browser = AttentionBrowser.from_run(self.run.value, split=self.split.value, data_root=self.data_root,
                                            display_size=self.display_size)
        self.browser = browser
        self._shown = None
        L, H = browser.num_blocks, browser.num_heads
        self.index.max = len(browser) - 1
        self.index.value = min(self.index.value, len(browser) - 1)
        self.blocks.max = L - 1
        self.blocks.value = (0, L - 1)
        self.head.options = [(f"head {h}", h) for h in range(H)]
        self.background_score.value = browser.background_score
        self.background_score.layout.display = None if browser.has_background else "none"
        for control in (self.blocks, self.weighting, self.head):
            control.disabled = not browser.uses_attention
        self.head.disabled = not browser.uses_attention or self.weighting.value != "head"
        self.gate_grid = GateGrid(L, H, self._pick_head)
        self.gate_box.children = [self.gate_grid.widget]
        self.classes.rows = min(len(browser.class_names), 10)
        config = browser.model.config
        gates = browser.head_gates(self.index.value)
        pruned = int((gates <= 0).sum()) if config.use_head_gates else 0
        self.title.value = (f"<h3 style='margin:4px 0'>Attention maps · {html.escape(self.run.label)}</h3>"
                            f"<small title='{html.escape(browser.name)}'>dataset {html.escape(browser.dataset_name)} · "
                            f"split {html.escape(browser.split)} "
                            f"({len(browser)} images) · {L} blocks × {H} heads, {pruned} pruned · "
                            f"classifier {config.classifier}</small>")
        self._image_changed()

    def _image_changed(self) -> None:
        browser = self._require()
        index = self.index.value
        entry = browser.cached(index)
        self.image_id.value = entry.image_id
        current = self.classes.value if isinstance(self.classes.value, int) else None
        rows = browser.class_rows(index)
        self.classes.options = [(row.label, row.index) for row in rows]
        if current is None or current >= len(rows):
            current = max(rows, key=lambda row: row.prob).index
        self.classes.value = current
        self._render()

    def _id_entered(self) -> None:
        browser = self._require()
        wanted = self.image_id.value.strip()
        if not wanted or wanted == browser.cached(self.index.value).image_id:
            return
        self.index.value = browser.index_of(wanted)
        self._image_changed()

    def _weighting_changed(self) -> None:
        self.head.disabled = self.weighting.value != "head" or not self._require().uses_attention
        self._render()

    def _pick_head(self, block: int, head: int) -> None:
        def pick() -> None:
            self.blocks.value = (block, block)
            self.weighting.value = "head"
            self.head.value = head
            self.head.disabled = False
            self._render()
        self._guarded(pick)

    def head_weighting(self) -> HeadWeighting:
        return int(self.head.value) if self.weighting.value == "head" else self.weighting.value

    def _require(self) -> AttentionBrowser:
        if self.browser is None:
            raise RuntimeError("no run loaded")
        return self.browser

    def _render(self) -> None:
        browser = self._require()
        started = time.perf_counter()
        index, weighting = self.index.value, self.head_weighting()
        block_range = tuple(self.blocks.value)
        panels = browser.render(index, class_index=int(self.classes.value), block_range=block_range,
                                head_weighting=weighting, opacity=float(self.opacity.value),
                                background_score=float(self.background_score.value))
        if self._shown != index:  # the image and its ground truth change only with the image
            self.image_panel[1].value = png_bytes(panels.image)
            self.truth_panel[1].value = png_bytes(panels.ground_truth)
            self._shown = index
        self.pseudo_panel[1].value = png_bytes(panels.pseudo_mask)
        self.map_panel[1].value = png_bytes(panels.class_map)
        assert self.gate_grid is not None
        self.gate_grid.update(browser.head_gates(index),
                              browser.contributing_heads(index, block_range=block_range, head_weighting=weighting))
        self.legend.value = browser.legend_html(index, panels.pseudo_labels)
        self.last_render_seconds = time.perf_counter() - started
        note = (" · <b>every head of the chosen blocks is pruned: the gate-weighted map is empty</b>"
                if panels.empty_map else "")
        self.status.value = (f"<small>image {index} ({html.escape(browser.ids[index])}) · "
                             f"rendered in {1000 * self.last_render_seconds:.0f} ms{note}</small>")


def build_browser(run_dir: str | os.PathLike, split: str = "val", *, runs_dir: str | os.PathLike | None = None,
                  data_root: str | os.PathLike | None = None, display_size: int = 256, smoke: bool = False):
    """The attention-map browser for a run, as one ipywidgets widget.

    `runs_dir` (default: the folder holding the run) is searched for other checkpoints to pick
    from; `data_root` overrides where the images are read (default: the run's, else
    ``$KYAM_DATA_ROOT``). `smoke=True` opens the "smoke" preset's run of ours on the shapes data
    under `runs_dir` instead of `run_dir` — the run the other notebooks share, trained in
    seconds when it is missing — so the notebook runs on a fresh clone.
    """
    if smoke:
        from .experiments import run_variant

        run_dir = run_variant("smoke", "full", dataset="shapes", data_root=str(data_root or ""),
                              runs_dir=resolve_path(runs_dir if runs_dir is not None else "runs"))
    return BrowserApp(run_dir, split=split, runs_dir=runs_dir, data_root=data_root or None,
                      display_size=display_size).widget
