"""Initialise a KyamViT from a timm ViT checkpoint (a timm model name, optionally with a local file of it).

The pretrained [CLS] embedding and its positional slot are replicated into the C class tokens and
the [REG] token; patch positional embeddings are resampled to the model's grid; the input conv is
adapted to other channel counts and patch sizes.

A timm name is checked against the model before any weights are read: width, depth and the number
of heads must match (a 12-head ViT-B's qkv has the shape of a 16-head one, and copying it would
silently cut each head across the pretrained ones). The check builds the timm model on the meta
device, so it needs no network. A local file goes with its timm name through timm's
``pretrained_cfg_overlay=dict(file=...)``; a bare local file (no name) can be checked for width and
depth only.
"""
from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models import adapt_input_conv, load_state_dict
from torch import Tensor

from .method.model import KyamViT

__all__ = ["timm_architecture", "check_timm_architecture", "load_timm_state_dict", "init_from_timm"]


def _is_file_source(source: str) -> bool:
    path = Path(os.path.expanduser(source))
    return path.exists() or (path.suffix in (".safetensors", ".pth", ".pt", ".bin", ".npz"))


def timm_architecture(name: str) -> dict[str, int]:
    """{"embed_dim", "depth", "num_heads", "patch_size"} of timm model `name`, without any weights or network."""
    if name.split(".")[0] not in timm.list_models():
        raise ValueError(f"{name!r} is not a timm model name")
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(blocks[0], "attn"):
        raise ValueError(f"timm model {name!r} is not a ViT (no blocks with attention)")
    return {"embed_dim": int(model.embed_dim), "depth": len(blocks), "num_heads": int(blocks[0].attn.num_heads),
            "patch_size": int(model.patch_embed.patch_size[0])}


def check_timm_architecture(name: str, *, embed_dim: int, depth: int, num_heads: int) -> None:
    """Raise ValueError naming both when timm model `name` differs from the model in width, depth or heads."""
    source = timm_architecture(name)
    wanted = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
    differ = [f"{key} {source[key]} (the model has {value})" for key, value in wanted.items() if source[key] != value]
    if differ:
        only_heads = source["embed_dim"] == embed_dim and source["depth"] == depth
        hint = f"; TrainConfig.num_heads={source['num_heads']} builds a model it fits" if only_heads else ""
        raise ValueError(f"pretrained timm model {name!r} has " + ", ".join(differ)
                         + f": its weights cannot initialise this model{hint}")


def load_timm_state_dict(source: str, *, file: str = "") -> dict[str, Tensor]:
    """A timm ViT state dict from a timm model name (with `file`: that model's weights from a local file)
    or from a bare local file (.safetensors/.pth/.bin)."""
    if file:
        path = Path(os.path.expanduser(file))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: pretrained weight file not found (for timm model {source!r})")
        try:
            return timm.create_model(source, pretrained=True, num_classes=0,
                                     pretrained_cfg_overlay=dict(file=str(path))).state_dict()
        except (RuntimeError, ValueError, OSError) as err:
            raise ValueError(f"{path}: not readable as weights of timm model {source!r} "
                             f"({type(err).__name__}: {err})") from err
    path = Path(os.path.expanduser(source))
    if _is_file_source(source):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: pretrained weight file not found")
        try:
            state = load_state_dict(str(path), use_ema=True, weights_only=True)
        except Exception as err:  # torch/safetensors raise many types for a bad file
            raise ValueError(f"{path}: not a readable weight file ({type(err).__name__}: {err})") from err
        return state
    if source not in timm.list_models(pretrained=True):
        raise ValueError(f"{source!r} is neither a local file nor a timm model with pretrained weights")
    # Needs a reachable model hub (or a filled local cache); raises the hub's error otherwise.
    return timm.create_model(source, pretrained=True, num_classes=0).state_dict()


def _grid_of(num_patch_tokens: int) -> tuple[int, int]:
    side = int(round(num_patch_tokens ** 0.5))
    if side * side != num_patch_tokens:
        raise ValueError(f"pretrained pos_embed has {num_patch_tokens} patch slots, not a square grid")
    return side, side


@torch.no_grad()
def init_from_timm(model: KyamViT, state: dict[str, Tensor] | str, *, file: str = "",
                   source_has_cls: bool = True) -> list[str]:
    """Copy a timm ViT's weights into `model`; returns the kyam parameter names left at their init.

    `state`: a state dict, a timm model name (checked against the model first; `file` = a local
    weight file of that model) or a bare local weight file.
    """
    cfg = model.config
    if isinstance(state, str):
        if file or not _is_file_source(state):
            check_timm_architecture(state, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads)
        state = load_timm_state_dict(state, file=file)
    prefix_tokens = int(source_has_cls)
    pos = state["pos_embed"]
    if pos.shape[-1] != cfg.embed_dim:
        raise ValueError(f"pretrained width {pos.shape[-1]} differs from the model's embed_dim {cfg.embed_dim}")
    num_extra = pos.shape[1] - prefix_tokens
    src_grid = _grid_of(num_extra)
    cls_pos = pos[:, :1] if prefix_tokens else pos.mean(dim=1, keepdim=True)
    cls_token = state.get("cls_token", torch.zeros(1, 1, cfg.embed_dim))
    patch_pos = resample_abs_pos_embed(pos[:, prefix_tokens:], new_size=list(model.patch_embed.grid_size),
                                       old_size=list(src_grid), num_prefix_tokens=0)

    weight = state["patch_embed.proj.weight"]
    if weight.shape[-1] != cfg.patch_size:
        weight = resample_patch_embed(weight, [cfg.patch_size, cfg.patch_size])
    weight = adapt_input_conv(cfg.in_channels, weight, base_chans=weight.shape[1])

    mapped: dict[str, Tensor] = {
        "class_tokens": cls_token.expand(1, model.num_class_tokens, -1),
        "class_pos_embed": cls_pos.expand(1, model.num_class_tokens, -1),
        "patch_pos_embed": patch_pos,
        "patch_embed.proj.weight": weight,
        "patch_embed.proj.bias": state["patch_embed.proj.bias"],
        "norm.weight": state["norm.weight"],
        "norm.bias": state["norm.bias"],
    }
    if cfg.use_reg_token:
        mapped["reg_token"] = cls_token
        mapped["reg_pos_embed"] = cls_pos
    for name in model.state_dict():
        if name.startswith("blocks.") and ".head_gate." not in name and name in state:
            mapped[name] = state[name]
    own = model.state_dict()
    source_depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    if source_depth != cfg.depth:
        raise ValueError(f"pretrained model has {source_depth} blocks, the config asks for {cfg.depth}")
    for name, value in mapped.items():
        if own[name].shape != value.shape:
            raise ValueError(f"pretrained {name} has shape {tuple(value.shape)}, the model needs {tuple(own[name].shape)}")
        own[name].copy_(value.to(own[name].dtype))
    return sorted(set(own) - set(mapped))
