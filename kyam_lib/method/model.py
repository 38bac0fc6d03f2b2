"""The kyam ViT: one [CLS] token per class, a [REG] token, and hard-concrete head gates.

Token layout (see `TokenLayout`): C class tokens, then the h*w patch tokens, then [REG].
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from torch import Tensor, nn

from ..config import ModelConfig
from .class_maps import gated_head_mean
from .gates import AlwaysOpen, HeadGate
from .masking import mask_absent_class_tokens

__all__ = ["ModelSize", "MODEL_SIZES", "model_size", "TokenLayout", "GatedAttention", "Block", "ClassifierHead", "ClassTokenHead",
           "TokenMeanHead", "CamHead", "CLASSIFIER_HEADS", "KyamOutput", "KyamViT"]


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """The width, depth and head count that a size name stands for (as timm names its ViTs)."""

    embed_dim: int
    depth: int
    num_heads: int


# "base" is the paper's ViT-B; the others train on 2 CPU cores.
MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(embed_dim=64, depth=4, num_heads=4),
    "small": ModelSize(embed_dim=128, depth=6, num_heads=4),
    "base": ModelSize(embed_dim=768, depth=12, num_heads=16),
}


def model_size(name: str) -> ModelSize:
    """The ModelSize called `name` ("tiny", "small", "base")."""
    if name not in MODEL_SIZES:
        raise ValueError(f"unknown model size {name!r}; known sizes: {', '.join(MODEL_SIZES)}")
    return MODEL_SIZES[name]


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Which rows of the sequence are class tokens, patches and the register."""

    num_class_tokens: int
    num_patches: int
    has_reg: bool

    @property
    def class_tokens(self) -> slice:
        return slice(0, self.num_class_tokens)

    @property
    def patches(self) -> slice:
        return slice(self.num_class_tokens, self.num_class_tokens + self.num_patches)

    @property
    def length(self) -> int:
        return self.num_class_tokens + self.num_patches + int(self.has_reg)


class GatedAttention(nn.Module):
    """Multi-head self-attention whose head outputs are multiplied by a gate.

    `fused=True` uses scaled_dot_product_attention; the class-token rows are then computed on the
    side when asked for, so the full N x N matrix is never kept.
    """

    def __init__(self, dim: int, *, num_heads: int, qkv_bias: bool = True, fused: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, gate: Tensor, layout: TokenLayout | None = None) -> tuple[Tensor, Tensor | None]:
        """x (B, N, D), gate (H,) → (B, N, D) and, if `layout` is given, (B, H, C, P) class→patch attention."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            out = attn.softmax(dim=-1) @ v
        out = out * gate.to(out.dtype).view(1, -1, 1, 1)
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))
        class_attention = None
        if layout is not None:
            rows = (q[:, :, layout.class_tokens] * self.scale) @ k.transpose(-2, -1)
            class_attention = rows.float().softmax(dim=-1)[..., layout.patches]
        return out, class_attention


class Block(nn.Module):
    """Pre-norm transformer block with a gated attention; same parameter names as timm's Block."""

    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 head_gate: nn.Module) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GatedAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.head_gate = head_gate
        self.ls1 = nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.ls2 = nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, layout: TokenLayout | None = None,
                gate_noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """→ (x, gate (H,), class attention (B, H, C, P) or None)."""
        gate = self.head_gate(gate_noise)
        attn_out, class_attention = self.attn(self.norm1(x), gate, layout)
        x = x + self.drop_path1(self.ls1(attn_out))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, gate, class_attention


@runtime_checkable
class ClassifierHead(Protocol):
    """What KyamViT asks of its head (`config.classifier` → `CLASSIFIER_HEADS`): how many class
    tokens the model carries for it, and (logits (B, C), patch logits (B, C, P) or None) from the
    last block's tokens x (B, N, D) before the final `norm`; the masking arguments apply in training."""

    @classmethod
    def from_config(cls, config: ModelConfig) -> ClassifierHead: ...

    @staticmethod
    def num_class_tokens(num_classes: int) -> int: ...

    def __call__(self, x: Tensor, layout: TokenLayout, norm: nn.Module, *, labels: Tensor | None = None,
                 generator: torch.Generator | None = None,
                 mask_uniforms: Tensor | None = None) -> tuple[Tensor, Tensor | None]: ...


class ClassTokenHead(nn.Linear):
    """Ours: the normed outputs of the C class tokens, absent classes masked in training, flattened
    into one linear layer of C*D inputs → logits (B, C)."""

    def __init__(self, *, num_classes: int, embed_dim: int, mask_rate: float) -> None:
        super().__init__(num_classes * embed_dim, num_classes)
        self.mask_rate = mask_rate

    @classmethod
    def from_config(cls, config: ModelConfig) -> ClassTokenHead:
        return cls(num_classes=config.num_classes, embed_dim=config.embed_dim, mask_rate=config.mask_rate)

    @staticmethod
    def num_class_tokens(num_classes: int) -> int:
        return num_classes

    def forward(self, x: Tensor, layout: TokenLayout, norm: nn.Module, *, labels: Tensor | None = None,
                generator: torch.Generator | None = None,
                mask_uniforms: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x (B, N, D) last-block tokens before the final `norm` → (logits (B, C), None)."""
        class_out = norm(x[:, layout.class_tokens])
        if self.training and labels is not None:
            class_out = mask_absent_class_tokens(class_out, labels, self.mask_rate, generator=generator,
                                                 uniforms=mask_uniforms)
        return super().forward(class_out.flatten(1)), None


class TokenMeanHead(nn.Module):
    """MCTformer: the logit of class k is the channel mean of class token k's raw last-block output.

    After a LayerNorm that mean is pinned near the norm's bias (|mean - mean(beta)| <= std(gamma)),
    so the logit could not learn; the final norm is not applied. No parameters; no masking.
    """

    @classmethod
    def from_config(cls, config: ModelConfig) -> TokenMeanHead:
        return cls()

    @staticmethod
    def num_class_tokens(num_classes: int) -> int:
        return num_classes

    def forward(self, x: Tensor, layout: TokenLayout, norm: nn.Module, *, labels: Tensor | None = None,
                generator: torch.Generator | None = None,
                mask_uniforms: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x (B, N, D) → (logits (B, C), None); `norm` and the masking arguments are not used."""
        return x[:, layout.class_tokens].mean(dim=-1), None


class CamHead(nn.Linear):
    """CAM, a standard ViT: one [CLS] token and a per-patch classifier W·f + b, averaged over patches."""

    def __init__(self, *, num_classes: int, embed_dim: int) -> None:
        super().__init__(embed_dim, num_classes)

    @classmethod
    def from_config(cls, config: ModelConfig) -> CamHead:
        return cls(num_classes=config.num_classes, embed_dim=config.embed_dim)

    @staticmethod
    def num_class_tokens(num_classes: int) -> int:
        return 1

    def forward(self, x: Tensor, layout: TokenLayout, norm: nn.Module, *, labels: Tensor | None = None,
                generator: torch.Generator | None = None,
                mask_uniforms: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x (B, N, D) → (logits (B, C), patch_logits (B, C, P)); no masking."""
        # CAM's maps are W·f without the bias (standard CAM); the logit adds it after pooling,
        # which equals pooling the biased patch scores.
        patch_logits = F.linear(norm(x[:, layout.patches]), self.weight).transpose(1, 2)
        return patch_logits.mean(dim=-1) + self.bias, patch_logits


# config.classifier → its head. A head reads the last block's tokens and returns (logits, patch
# logits or None); `num_class_tokens` says how many class tokens the model must carry for it.
CLASSIFIER_HEADS: dict[str, type[ClassifierHead]] = {
    "class_tokens": ClassTokenHead,
    "token_mean": TokenMeanHead,
    "cam": CamHead,
}


@dataclasses.dataclass
class KyamOutput:
    """What the model returns.

    logits: (B, C). head_gates: (L, H) gate values used in this forward (evaluation: 0/1).
    class_attention: (B, L, H, C, P) class-token → patch attention, when requested; H = 1 with
        `attention_heads="gated_mean"` (each block's heads already averaged with the gates).
    patch_logits: (B, C, P) per-patch class scores W·f of the "cam" classifier, without the bias
        (the class activation maps); logits = their mean + bias. None for the other classifiers.
    """

    logits: Tensor
    head_gates: Tensor
    class_attention: Tensor | None = None
    patch_logits: Tensor | None = None
    grid_size: tuple[int, int] = (0, 0)


class KyamViT(nn.Module):
    """ViT with C class tokens (+[REG]) whose class-token attention maps are the pseudo-masks."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.num_classes = c.num_classes
        self.patch_size = c.patch_size
        self.embed_dim = c.embed_dim
        head_type = CLASSIFIER_HEADS[c.classifier]
        self.num_class_tokens = head_type.num_class_tokens(c.num_classes)  # "cam": one [CLS] token
        self.patch_embed = PatchEmbed(img_size=c.image_size, patch_size=c.patch_size, in_chans=c.in_channels,
                                      embed_dim=c.embed_dim, strict_img_size=False)
        self.class_tokens = nn.Parameter(torch.zeros(1, self.num_class_tokens, c.embed_dim))
        self.class_pos_embed = nn.Parameter(torch.zeros(1, self.num_class_tokens, c.embed_dim))
        self.patch_pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, c.embed_dim))
        num_reg = int(c.use_reg_token)
        self.reg_token = nn.Parameter(torch.zeros(1, num_reg, c.embed_dim))
        self.reg_pos_embed = nn.Parameter(torch.zeros(1, num_reg, c.embed_dim))
        drop_rates = torch.linspace(0, c.drop_path_rate, c.depth).tolist()

        def make_gate() -> nn.Module:
            if not c.use_head_gates:
                return AlwaysOpen(c.num_heads)
            return HeadGate(c.num_heads, temperature=c.gate_temperature, stretch=c.gate_stretch,
                            init_range=c.gate_init_range)

        self.blocks = nn.ModuleList([
            Block(c.embed_dim, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
                  drop_path=rate, head_gate=make_gate())
            for rate in drop_rates
        ])
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        # Built last, as a Linear for "class_tokens" and "cam": construction and `_init_weights` draw
        # from the RNG in that order, and the state_dict keys are head.weight / head.bias.
        self.head = head_type.from_config(c)
        self._init_weights()

    def _init_weights(self) -> None:
        for param in (self.class_tokens, self.class_pos_embed, self.patch_pos_embed, self.reg_token, self.reg_pos_embed):
            trunc_normal_(param, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # -- geometry -------------------------------------------------------------------------
    def grid_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        H, W = image_hw
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image size {H}x{W} is not divisible by patch size {self.patch_size}")
        return H // self.patch_size, W // self.patch_size

    def layout(self, grid: tuple[int, int]) -> TokenLayout:
        return TokenLayout(self.num_class_tokens, grid[0] * grid[1], self.config.use_reg_token)

    def _patch_pos(self, grid: tuple[int, int]) -> Tensor:
        if grid == self.patch_embed.grid_size:
            return self.patch_pos_embed
        return resample_abs_pos_embed(self.patch_pos_embed, new_size=list(grid),
                                      old_size=list(self.patch_embed.grid_size), num_prefix_tokens=0)

    # -- gates ----------------------------------------------------------------------------
    def head_gates(self) -> Tensor:
        """(L, H) gate values in the current mode (evaluation: deterministic 0/1)."""
        return torch.stack([block.head_gate() for block in self.blocks])

    def gate_open_probabilities(self) -> Tensor:
        """(L*H,) P(open) of every gated head; empty for a model without gates."""
        return torch.cat([block.head_gate.open_probability() for block in self.blocks])

    # -- forward --------------------------------------------------------------------------
    def forward(self, images: Tensor, *, labels: Tensor | None = None, return_attention: bool = False,
                generator: torch.Generator | None = None, mask_uniforms: Tensor | None = None,
                gate_noise: Tensor | None = None,
                attention_heads: Literal["all", "gated_mean"] = "all") -> KyamOutput:
        """images (B, C_in, H, W); labels (B, C) multi-hot enable class-token masking in training.

        `mask_uniforms` (B, C) in [0, 1) replaces the masking draws (per-sample seeding across ranks);
        `gate_noise` (L, H) in (0, 1) replaces the gates' draws (in evaluation too: ones hold every gate open).
        `attention_heads="gated_mean"` returns class_attention (B, L, 1, C, P), each block's heads
        averaged with the gates of this forward (`gated_head_mean`): the class maps of the default
        head weighting (pass head_gates=None to `class_maps`) at 1/H of the memory.
        """
        if attention_heads not in ("all", "gated_mean"):
            raise ValueError(f"attention_heads: expected 'all' or 'gated_mean', got {attention_heads!r}")
        if images.shape[1] != self.config.in_channels:
            raise ValueError(f"model expects {self.config.in_channels} input channels, got {images.shape[1]}")
        grid = self.grid_size(tuple(images.shape[-2:]))
        layout = self.layout(grid)
        x = self.tokens(images, grid)
        x, head_gates, class_attention = self.run_blocks(x, layout if return_attention else None,
                                                         gate_noise=gate_noise, attention_heads=attention_heads)
        logits, patch_logits = self.head(x, layout, self.norm, labels=labels, generator=generator,
                                         mask_uniforms=mask_uniforms)
        return KyamOutput(logits=logits, head_gates=head_gates, class_attention=class_attention,
                          patch_logits=patch_logits, grid_size=grid)

    def tokens(self, images: Tensor, grid: tuple[int, int]) -> Tensor:
        """images (B, C_in, H, W) → (B, N, D): class tokens, patches, [REG], each with its position."""
        B = images.shape[0]
        patches = self.patch_embed(images) + self._patch_pos(grid)
        return torch.cat([
            (self.class_tokens + self.class_pos_embed).expand(B, -1, -1),
            patches,
            (self.reg_token + self.reg_pos_embed).expand(B, -1, -1),
        ], dim=1)

    def run_blocks(self, x: Tensor, layout: TokenLayout | None, *, gate_noise: Tensor | None = None,
                   attention_heads: Literal["all", "gated_mean"] = "all") -> tuple[Tensor, Tensor, Tensor | None]:
        """x (B, N, D) → (x (B, N, D), gates (L, H), class attention (B, L, H, C, P) if `layout` is given)."""
        B = x.shape[0]
        gates, class_attention = [], None
        for index, block in enumerate(self.blocks):
            noise = gate_noise[index] if gate_noise is not None else None
            x, gate, attention = block(x, layout, noise)
            gates.append(gate)
            if attention is not None:
                if attention_heads == "gated_mean":
                    attention = gated_head_mean(attention, gate)
                if class_attention is None:
                    # Filled block by block: stacking a list at the end would hold every block's rows twice.
                    class_attention = attention.new_empty((B, len(self.blocks), *attention.shape[1:]))
                class_attention[:, index] = attention
        return x, torch.stack(gates), class_attention

    def loss(self, output: KyamOutput, labels: Tensor) -> Tensor:
        """Classification loss: BCE-with-logits (multi-label) or cross-entropy (single-label)."""
        if self.config.multi_label:
            return F.binary_cross_entropy_with_logits(output.logits.float(), labels.float())
        return F.cross_entropy(output.logits.float(), labels.argmax(dim=1))

    def no_weight_decay(self) -> set[str]:
        return {"class_tokens", "class_pos_embed", "patch_pos_embed", "reg_token", "reg_pos_embed"}
