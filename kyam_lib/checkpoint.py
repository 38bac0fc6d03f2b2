"""Checkpoints: safetensors weights + JSON config in one directory, written atomically.

Layout of a checkpoint directory::

    model.safetensors     weights; its metadata repeats the model config, so the file alone suffices
    config.json           {"model": ModelConfig fields, "train": TrainConfig fields or null}
    train_state.safetensors + train_state.json   (optional) optimizer, scheduler, epoch, RNG states

Nothing is unpickled when loading: tensors come from safetensors, everything else from JSON.

A run directory keeps its epoch checkpoints as ``checkpoints/epoch_NNNN``. A checkpoint is
written into ``.<name>.<random>.tmp`` and renamed into place, so a killed writer leaves at most a
hidden temporary, which `latest_checkpoint` never returns and `remove_stale_temporaries` deletes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from .config import ConfigError, ModelConfig
from .io import read_json
from .method.model import KyamViT

__all__ = ["CheckpointError", "write_weights_dir", "read_weights_dir", "LoadedCheckpoint", "save_checkpoint", "load_checkpoint", "load_training_state",
           "epoch_checkpoints", "latest_checkpoint", "remove_stale_temporaries", "check_compatible"]

FORMAT = "kyam-checkpoint-v1"
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, not a kyam checkpoint, or does not fit the data."""


@dataclasses.dataclass
class LoadedCheckpoint:
    model: KyamViT
    model_config: ModelConfig
    train_config: dict[str, Any] | None
    path: Path


def _flatten(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Replace tensors in a nested structure by {"__tensor__": key}, collecting them in `tensors`."""
    if isinstance(obj, Tensor):
        key = prefix or "value"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"{prefix}: only str/int keys can be stored")
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{prefix}: cannot store a {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def save_checkpoint(directory: str | os.PathLike, model: KyamViT, *, train_config: dict[str, Any] | None = None,
                    training_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory atomically (temp directory, then rename) and return its path."""
    return write_weights_dir(directory, model.state_dict(), fmt=FORMAT, model_config=model.config.to_dict(),
                             train_config=train_config, training_state=training_state)


def write_weights_dir(directory: str | os.PathLike, state_dict: dict[str, Tensor], *, fmt: str,
                      model_config: dict[str, Any], train_config: dict[str, Any] | None = None,
                      training_state: dict[str, Any] | None = None) -> Path:
    """model.safetensors (config in its metadata) + config.json (+ training state), renamed into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(state, tmp / "model.safetensors", metadata={"format": fmt, "model_config": json.dumps(model_config)})
        (tmp / "config.json").write_text(json.dumps({"format": fmt, "model": model_config, "train": train_config},
                                                    indent=2) + "\n")
        if training_state is not None:
            tensors: dict[str, Tensor] = {}
            structure = _flatten(training_state, "", tensors)
            save_file(tensors, tmp / "train_state.safetensors", metadata={"format": fmt})
            (tmp / "train_state.json").write_text(json.dumps(structure) + "\n")
        for file in tmp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        _fsync_directory(directory.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _fsync_directory(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def read_weights_dir(path: str | os.PathLike, *, fmt: str, what: str = "kyam checkpoint",
                     map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any], dict[str, Tensor], dict | None]:
    """(weights file, stored model config, state dict, train config) of a checkpoint written by write_weights_dir."""
    weights = _weights_file(Path(path))
    try:
        with safe_open(str(weights), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: not a safetensors checkpoint ({err})") from err
    if metadata.get("format") != fmt or "model_config" not in metadata:
        raise CheckpointError(f"{weights}: not a {what} (metadata format={metadata.get('format')!r})")
    try:
        model_config = json.loads(metadata["model_config"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{weights}: stored model config is invalid: {err}") from err
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: weights are unreadable ({err})") from err
    config_file = weights.parent / "config.json"
    train_config = read_json(config_file).get("train") if config_file.is_file() else None
    return weights, model_config, state, train_config


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model from the checkpoint's own config and load its weights."""
    weights, stored, state, train_config = read_weights_dir(path, fmt=FORMAT, map_location=map_location)
    try:
        model_config = ModelConfig.from_dict(stored, source=str(weights))
    except ConfigError as err:
        raise CheckpointError(f"{weights}: stored model config is invalid: {err}") from err
    model = KyamViT(model_config)
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(f"{weights}: weights do not match the stored config "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    model.load_state_dict(state)
    model.to(map_location)
    return LoadedCheckpoint(model=model, model_config=model_config, train_config=train_config, path=weights.parent)


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """The optimizer/scheduler/epoch/RNG state saved beside the weights."""
    path = Path(path)
    structure_file, tensor_file = path / "train_state.json", path / "train_state.safetensors"
    if not structure_file.is_file() or not tensor_file.is_file():
        raise CheckpointError(f"{path}: has no training state (train_state.json/.safetensors)")
    try:
        structure = read_json(structure_file)
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: training state is unreadable ({err})") from err
    try:
        return _unflatten(structure, tensors)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{structure_file}: training state does not match {tensor_file.name} ({err})") from err


def epoch_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The `epoch_NNNN` checkpoints under `run_dir/checkpoints`, oldest first (temporaries excluded)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    epochs = [(int(m.group(1)), p) for p in root.iterdir() if (m := _EPOCH_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(epochs)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The highest `epoch_NNNN` checkpoint under `run_dir/checkpoints`, or None."""
    epochs = epoch_checkpoints(run_dir)
    return epochs[-1] if epochs else None


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete what killed writers left in `run_dir` and `run_dir/checkpoints`; return what was removed.

    ``.<name>.*.tmp`` files and directories are half-written and deleted. A ``.<name>.old``
    directory is the previous version of a checkpoint being replaced: it is moved back when the
    kill came before the new version was in place, else deleted.
    """
    removed: list[Path] = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.name.startswith("."):
                continue
            if path.name.endswith(".tmp"):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                removed.append(path)
            elif path.name.endswith(".old") and path.is_dir():
                current = folder / path.name[1:-len(".old")]
                if current.exists():
                    shutil.rmtree(path)
                    removed.append(path)
                else:
                    os.replace(path, current)
    return removed


def check_compatible(model_config: ModelConfig, *, num_classes: int, num_channels: int,
                     source: str = "checkpoint") -> None:
    """Raise CheckpointError when a model and a dataset disagree in class or channel count."""
    if model_config.num_classes != num_classes:
        raise CheckpointError(f"{source}: model has {model_config.num_classes} classes, the data has {num_classes}")
    if model_config.in_channels != num_channels:
        raise CheckpointError(f"{source}: model expects {model_config.in_channels} input channels, "
                              f"the data has {num_channels}")
