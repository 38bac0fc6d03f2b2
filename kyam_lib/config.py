"""Config dataclasses: flat, JSON-serialisable, strict about unknown fields and types.

The field names are the papermill parameter names of the notebooks and the `--key value`
overrides of `python -m kyam_lib.train`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from typing import Any, Literal, Sequence, TypeVar

from .io import read_json, write_json

__all__ = ["ConfigError", "ConfigBase", "ModelConfig", "DataConfig", "RunConfig", "TrainConfig", "parse_overrides"]

C = TypeVar("C", bound="ConfigBase")


class ConfigError(ValueError):
    """A config value or field is wrong; the message names the field."""


def _check_type(cls_name: str, name: str, value: Any, annotation: Any) -> Any:
    """Coerce JSON-ish `value` to `annotation`, raising ConfigError naming the field."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    where = f"{cls_name}.{name}"
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(cls_name, name, value, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} does not match {annotation}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(_check_type(cls_name, name, v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return (tuple if origin is tuple else list)(_check_type(cls_name, name, v, inner) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigBase:
    """Strict, JSON round-trippable config base."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = _check_type(type(self).__name__, field.name, getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; subclasses raise ConfigError naming the field."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any], *, source: str | None = None) -> C:
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            where = f"{source}: " if source else ""
            raise ConfigError(
                f"{where}unknown {cls.__name__} field(s) {unknown}; known fields: {cls.field_names()}"
            )
        return cls(**values)

    @classmethod
    def from_json(cls: type[C], path: str | os.PathLike) -> C:
        values = read_json(path)
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object of {cls.__name__} fields")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    def replace(self: C, **changes: Any) -> C:
        return self.from_dict({**self.to_dict(), **changes})


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig(ConfigBase):
    """Everything needed to rebuild a model; stored in every checkpoint."""

    num_classes: int = 6                 # C: one class token per class
    in_channels: int = 3                 # 3 RGB, 13 Sentinel-2, 15 with Sentinel-1
    image_size: tuple[int, int] = (64, 64)  # (H, W); both divisible by patch_size
    patch_size: int = 8
    embed_dim: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    classifier: Literal["class_tokens", "token_mean", "cam"] = "class_tokens"
    use_reg_token: bool = True
    use_head_gates: bool = True
    gate_temperature: float = 0.33       # beta of the hard-concrete distribution
    gate_stretch: tuple[float, float] = (-0.1, 1.1)  # (gamma, zeta)
    gate_init_range: float = 0.59        # log alpha ~ U(-r, r) at initialisation
    mask_rate: float = 0.5               # probability of zeroing an absent class's token output
    multi_label: bool = True             # BCE-with-logits; False: cross-entropy (EndoTect)

    def validate(self) -> None:
        for axis, size in zip(("height", "width"), self.image_size):
            if size <= 0 or size % self.patch_size:
                raise ConfigError(
                    f"ModelConfig.image_size: {axis} {size} is not a positive multiple of "
                    f"patch_size {self.patch_size} (image_size={list(self.image_size)})"
                )
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"ModelConfig.embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.mask_rate <= 1.0:
            raise ConfigError(f"ModelConfig.mask_rate {self.mask_rate} is outside [0, 1]")
        if self.num_classes < 1 or self.in_channels < 1:
            raise ConfigError("ModelConfig.num_classes and in_channels must be positive")
        gamma, zeta = self.gate_stretch
        if not gamma < 0.0 < 1.0 < zeta:
            raise ConfigError(f"ModelConfig.gate_stretch {self.gate_stretch} must satisfy gamma < 0 < 1 < zeta")

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig(ConfigBase):
    """The data of a run, as TrainConfig and SegConfig share it (what `run_data.open_split` reads)."""

    dataset: str = "shapes"              # shapes | regions | voc | coco | ade20k | dfc2020 | endotect
    data_root: str = ""                  # "" = $KYAM_DATA_ROOT, else <repo>/data
    train_split: str = "train"
    val_split: str = "val"
    image_size: tuple[int, int] = (64, 64)
    max_train_images: int = 0            # 0 = all; >0 takes a fixed seeded subset (data.seeded_subset)
    max_val_images: int = 0
    augment: bool = True                 # random resized crop + flip on the training split
    num_workers: int = 0                 # DataLoader workers; -1 = from the CPU count (kyam_lib.protocol)
    persistent_workers: bool = False     # keep the workers between epochs (num_workers > 0)
    # loader options (each applies to its dataset only; kyam_lib.protocol.dataset_options)
    coco_year: int = 2014                # coco: 2014 (the peers' protocol) or 2017
    ade20k_other_as_class: bool = True   # ade20k: mask value 0 ("other") is a class, as the official code
    dfc2020_use_s1: bool = False         # dfc2020: 13 Sentinel-2 bands, + 2 Sentinel-1 bands when true
    endotect_subset: Literal["all", "lower-gi"] = "all"  # endotect: 23 classes, or the 16 lower-GI ones
    split_seed: int = 0                  # endotect / voc official_random: seed of the random split
    train_fraction: float = 0.7          # endotect / voc official_random: share of images in train
    voc_split_mode: Literal["standard", "official_random"] = "standard"  # voc: the ImageSets lists or 70/30


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig(DataConfig):
    """A run's data (DataConfig), optimisation and bookkeeping: the fields TrainConfig and SegConfig share."""

    # optimisation
    epochs: int = 20
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0               # 0 = off
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 on CUDA, off on CPU
    device: str = "auto"
    # bookkeeping
    seed: int = 0
    out_dir: str = "runs/default"
    keep_checkpoints: int = 2            # resumable epoch checkpoints kept (the newest ones)
    checkpoint_every: int = 1            # epochs between resumable checkpoints (the last epoch always has one)
    deterministic: bool = True           # False: fused attention kernels, cuDNN autotuning (not bitwise repeatable)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(RunConfig):
    """One training run: the shared RunConfig fields (data, optimisation, bookkeeping) and the classifier's
    own. Flat, so it is a papermill parameters cell."""

    # data
    cache_items: bool = False            # keep decoded items in memory (augment=False only): small sets on CPU
    # model
    model_size: Literal["tiny", "small", "base"] = "small"
    num_heads: int = 0                   # 0 = the model size's (base: 16, the paper's); 12 for timm ViT-B weights
    patch_size: int = 8
    classifier: Literal["class_tokens", "token_mean", "cam"] = "class_tokens"
    use_reg_token: bool = True
    use_head_gates: bool = True
    mask_rate: float = 0.5
    drop_path_rate: float = 0.0
    pretrained: str = ""                 # timm model name (or a bare local weight file); "" = random init
    pretrained_file: str = ""            # local weight file of the timm model named in `pretrained`
    # objective
    l0_weight: float = 0.01              # lambda of Equation 1
    l0_warmup_epochs: float = 0.0        # gates held open and lambda 0 for these epochs (0 = the paper: from the start)
    gate_ramp_epochs: float = 0.0        # after the warm-up, gate lr and lambda rise linearly to full over these epochs
    # optimisation
    gate_lr_ratio: float = 1.0           # lr of the gates' log alpha = this x lr, on the same schedule (METHOD.md)
    # bookkeeping
    snapshot_every: int = 0              # epochs between weights-only snapshots/epoch_NNNN kept for good; 0 = none
    finite_check_every: int = 1          # steps between non-finite loss checks (each one waits for the GPU)
    # CPU threads of this run's ops; 0 = torch's default. It changes the weights (reduction order),
    # so it is part of the run, and runs with 1 thread can train side by side (experiments.run_table).
    cpu_threads: int = 0

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("TrainConfig.epochs and batch_size must be positive")
        if self.cpu_threads < 0:
            raise ConfigError(f"TrainConfig.cpu_threads {self.cpu_threads}: expected 0 (torch's default) or >= 1")
        if self.num_workers < -1:
            raise ConfigError(f"TrainConfig.num_workers {self.num_workers}: expected -1 (from the CPU count) or >= 0")
        for name in ("checkpoint_every", "finite_check_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} {getattr(self, name)} must be >= 1")
        if self.snapshot_every < 0 or self.num_heads < 0:
            raise ConfigError("TrainConfig.snapshot_every and num_heads must be >= 0")
        if self.pretrained_file and not self.pretrained:
            raise ConfigError(f"TrainConfig.pretrained_file {self.pretrained_file!r} needs the timm model name it "
                              "belongs to in TrainConfig.pretrained (e.g. vit_base_patch16_224.augreg_in21k)")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"TrainConfig.train_fraction {self.train_fraction} is outside (0, 1)")
        for axis, size in zip(("height", "width"), self.image_size):
            if size <= 0 or size % self.patch_size:
                raise ConfigError(
                    f"TrainConfig.image_size: {axis} {size} is not a positive multiple of "
                    f"patch_size {self.patch_size} (image_size={list(self.image_size)})"
                )
        if self.cache_items and self.augment:
            raise ConfigError("TrainConfig.cache_items needs augment=false: augmented items differ every epoch")
        if self.l0_warmup_epochs < 0:
            raise ConfigError(f"TrainConfig.l0_warmup_epochs {self.l0_warmup_epochs} is negative")
        if self.gate_ramp_epochs < 0 or self.gate_lr_ratio < 0:
            raise ConfigError(f"TrainConfig.gate_ramp_epochs {self.gate_ramp_epochs} and gate_lr_ratio "
                              f"{self.gate_lr_ratio} must be >= 0")
        if self.l0_weight < 0:
            raise ConfigError(f"TrainConfig.l0_weight {self.l0_weight} is negative")
        if not 0.0 <= self.mask_rate <= 1.0:
            raise ConfigError(f"TrainConfig.mask_rate {self.mask_rate} is outside [0, 1]")


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """`--key value` pairs → dict; values parsed as JSON when they are JSON, else kept as strings."""
    values: dict[str, Any] = {}
    items = list(args)
    while items:
        key = items.pop(0)
        if not key.startswith("--"):
            raise ConfigError(f"expected --key value, got {key!r}")
        key = key[2:].replace("-", "_")
        if "=" in key:
            key, raw = key.split("=", 1)
        elif items:
            raw = items.pop(0)
        else:
            raise ConfigError(f"--{key} has no value")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values
