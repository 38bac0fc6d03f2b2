"""The file formats other WSSS tools read and write: class-map dictionaries and image labels.

- IRN / ToCo ``<id>.npy``: a dict ``{"keys": (n,) int foreground class indices present,
  "high_res": (n, H, W) float32 maps at image size, each divided by its maximum}``.
- MCTformer ``<id>.npy``: a dict ``{class_index: (H, W) float32 map in [0, 1]}``.
- ``cls_labels.npy``: a dict ``{image id: (C,) multi-hot}``; ids as strings ("2007_000032") or as the
  integers IRN uses (2007000032, the id without its underscore).

Class indices are foreground indices 0..C-1 (mask value k + 1 on datasets with background). All are
plain numpy: a pickled dict of arrays and ints; nothing else is accepted when reading.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from kyam_lib.io import atomic_write

__all__ = ["MapFormat", "MAP_FORMATS", "MapFileError", "load_dict_npy", "write_class_maps", "read_class_maps",
           "write_cls_labels", "read_cls_labels"]

MapFormat = Literal["irn", "mctformer"]
MAP_FORMATS: tuple[str, ...] = ("irn", "mctformer")


class MapFileError(ValueError):
    """A map or label file is missing or not in the expected format; the message names the file."""


def _save_npy(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, value, allow_pickle=True)


def _is_array_like(value: object) -> bool:
    return isinstance(value, (np.ndarray, np.generic, int, float)) and not isinstance(value, bool)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and scalars inside builtin containers, and nothing else.

    A ``.npy`` dict is a pickle, and a pickle can run any code when loaded: only the few callables
    numpy itself uses to rebuild arrays are resolved.
    """

    ALLOWED = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype"),
                                                          ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        return super().find_class(module, name)


def _read_pickled_npy(path: Path) -> object:
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(handle)
        if dtype != object:
            return f"a plain {dtype} array"
        return _ArrayUnpickler(handle).load()


def load_dict_npy(path: str | os.PathLike) -> dict:
    """Read a ``.npy`` file holding one dict whose values are numpy arrays or numbers.

    Pickles are needed to store a dict in ``.npy``; this is the only place kyam reads them, through
    an unpickler that resolves nothing but numpy's array parts, and anything that is not a dict of
    arrays is rejected.
    """
    path = Path(path)
    if not path.is_file():
        raise MapFileError(f"{path}: file not found")
    try:
        value = _read_pickled_npy(path)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, TypeError) as err:
        raise MapFileError(f"{path}: not a .npy dict of arrays ({err})") from err
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    if not isinstance(value, dict):
        shown = value if isinstance(value, str) else type(value).__name__
        raise MapFileError(f"{path}: expected a dict saved with np.save, got {shown}")
    bad = [key for key, item in value.items() if not _is_array_like(item)]
    if bad:
        raise MapFileError(f"{path}: entry {bad[0]!r} is a {type(value[bad[0]]).__name__}, not an array")
    arrays = [item for item in value.values() if isinstance(item, np.ndarray)]
    if any(array.dtype == object for array in arrays):
        raise MapFileError(f"{path}: object arrays are not accepted, only numbers")
    return value


def write_class_maps(path: str | os.PathLike, maps: Tensor | np.ndarray, classes: Sequence[int],
                     fmt: MapFormat) -> None:
    """Write the (n, H, W) maps of foreground classes `classes` (max-normalised, at image size)."""
    maps = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    maps = maps.astype(np.float32, copy=False)
    classes = [int(c) for c in classes]
    if maps.ndim != 3 or maps.shape[0] != len(classes):
        raise ValueError(f"maps: expected ({len(classes)}, H, W) for classes {classes}, got {maps.shape}")
    if fmt == "irn":
        _save_npy(Path(path), {"keys": np.asarray(classes, dtype=np.int64), "high_res": maps})
    elif fmt == "mctformer":
        _save_npy(Path(path), {c: maps[row] for row, c in enumerate(classes)})
    else:
        raise ValueError(f"fmt: expected one of {list(MAP_FORMATS)}, got {fmt!r}")


def read_class_maps(path: str | os.PathLike, fmt: MapFormat, *, num_classes: int,
                    size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Read one map file: (maps (C, H, W) float32, present (C,) bool); absent classes' maps are zero.

    `size` (H, W), when given, must match the maps (they are at image size in both formats).
    """
    value = load_dict_npy(path)
    if fmt == "irn":
        if "high_res" not in value or "keys" not in value:
            raise MapFileError(f"{path}: an IRN map file needs the entries 'keys' and 'high_res', "
                               f"got {sorted(map(str, value))}")
        keys = np.asarray(value["keys"]).reshape(-1)
        stack = np.asarray(value["high_res"])
        if stack.ndim == 2 and len(keys) == 1:
            stack = stack[None]
        if stack.ndim != 3 or stack.shape[0] != len(keys):
            raise MapFileError(f"{path}: 'high_res' has shape {stack.shape}, expected ({len(keys)}, H, W) for "
                               f"{len(keys)} keys")
        entries = list(zip(keys.tolist(), stack))
    elif fmt == "mctformer":
        entries = [(key, np.asarray(array)) for key, array in value.items()]
    else:
        raise ValueError(f"fmt: expected one of {list(MAP_FORMATS)}, got {fmt!r}")
    shapes = {array.shape for _, array in entries}
    if len(shapes) > 1 or any(len(s) != 2 for s in shapes):
        raise MapFileError(f"{path}: expected (H, W) maps of one size, got shapes {sorted(shapes)}")
    shape = next(iter(shapes)) if shapes else size
    if shape is None:
        raise MapFileError(f"{path}: holds no map and no image size is known")
    if size is not None and tuple(shape) != tuple(size):
        raise MapFileError(f"{path}: maps are {shape[1]}x{shape[0]} (WxH), the image is {size[1]}x{size[0]}")
    maps = np.zeros((num_classes, *shape), dtype=np.float32)
    present = np.zeros(num_classes, dtype=bool)
    for key, array in entries:
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)) or not 0 <= key < num_classes:
            raise MapFileError(f"{path}: class key {key!r} is not a foreground class index in 0..{num_classes - 1}")
        if not np.isfinite(array).all():
            raise MapFileError(f"{path}: map of class {int(key)} has non-finite values")
        maps[int(key)] = array
        present[int(key)] = True
    return torch.from_numpy(maps), torch.from_numpy(present)


def write_cls_labels(path: str | os.PathLike, labels: Mapping[str, np.ndarray]) -> None:
    """Write ``{image id: (C,) float32 multi-hot}`` with the ids as strings (any dataset's ids)."""
    _save_npy(Path(path), {str(k): np.asarray(v, dtype=np.float32) for k, v in labels.items()})


def read_cls_labels(path: str | os.PathLike, ids: Sequence[str], *, num_classes: int) -> dict[str, np.ndarray]:
    """The (C,) multi-hot labels of `ids` from a cls_labels.npy with string or IRN integer keys."""
    value = load_dict_npy(path)
    table = {str(key): array for key, array in value.items()}
    labels = {}
    for image_id in ids:
        entry = table.get(image_id, table.get(image_id.replace("_", "")))
        if entry is None:
            raise MapFileError(f"{path}: no labels for image {image_id!r}")
        entry = np.asarray(entry, dtype=np.float32).reshape(-1)
        if entry.shape != (num_classes,) or not np.isin(entry, (0.0, 1.0)).all():
            raise MapFileError(f"{path}: labels of {image_id!r} are not a {num_classes}-d 0/1 vector: {entry.tolist()}")
        labels[image_id] = entry
    return labels
