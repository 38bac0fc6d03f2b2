"""The kyam ViT: model sizes, token layout, the two attention paths, shapes, plain-ViT equivalence,
the classifier heads and their initialisation."""
import dataclasses

import pytest
import timm
import torch

from kyam_lib.config import ModelConfig
from kyam_lib.method.metrics import classifier_accuracy
from kyam_lib.method.model import GatedAttention, KyamViT, ModelSize, TokenLayout, model_size
from kyam_lib.pretrained import init_from_timm
from kyam_lib.train import chance_accuracy


def tiny(**overrides) -> ModelConfig:
    values = dict(num_classes=5, image_size=(32, 48), patch_size=8, embed_dim=32, depth=3, num_heads=4)
    values.update(overrides)
    return ModelConfig(**values)


def test_token_layout():
    layout = TokenLayout(num_class_tokens=3, num_patches=10, has_reg=True)
    assert layout.class_tokens == slice(0, 3)
    assert layout.patches == slice(3, 13)
    assert layout.length == 14


def test_gradient_reaches_log_alpha_through_the_model():
    model = KyamViT(tiny()).train()
    out = model(torch.randn(2, 3, 32, 48), labels=torch.zeros(2, 5), gate_noise=torch.full((3, 4), 0.5))
    out.logits.sum().backward()
    grads = torch.stack([b.head_gate.log_alpha.grad for b in model.blocks])
    assert grads.abs().sum() > 0


@pytest.mark.parametrize("channels", [3, 13, 15])
@pytest.mark.parametrize("size", [(32, 32), (32, 48), (48, 24)])
def test_shapes(channels, size):
    model = KyamViT(tiny(in_channels=channels, image_size=size)).eval()
    out = model(torch.randn(2, channels, *size), return_attention=True)
    grid = (size[0] // 8, size[1] // 8)
    assert out.logits.shape == (2, 5)
    assert out.head_gates.shape == (3, 4)
    assert out.grid_size == grid
    assert out.class_attention.shape == (2, 3, 4, 5, grid[0] * grid[1])
    # rows are softmax over all tokens: the patch part sums to less than one, and is positive
    row_sums = out.class_attention.sum(-1)
    assert (row_sums < 1).all() and (row_sums > 0).all()


def test_other_image_size_resamples_positions():
    model = KyamViT(tiny(image_size=(32, 32))).eval()
    out = model(torch.randn(1, 3, 48, 64), return_attention=True)
    assert out.class_attention.shape[-1] == 6 * 8


def test_wrong_channel_count_and_indivisible_size_are_clear_errors():
    model = KyamViT(tiny())
    with pytest.raises(ValueError, match="3 input channels, got 4"):
        model(torch.randn(1, 4, 32, 48))
    with pytest.raises(ValueError, match="not divisible by patch size 8"):
        model(torch.randn(1, 3, 30, 48))


def test_fused_and_explicit_attention_agree_with_gates():
    torch.manual_seed(0)
    fused = GatedAttention(32, num_heads=4, fused=True)
    explicit = GatedAttention(32, num_heads=4, fused=False)
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(2, 11, 32)
    gate = torch.tensor([1.0, 0.0, 1.0, 1.0])
    layout = TokenLayout(3, 7, True)
    out_f, rows_f = fused(x, gate, layout)
    out_e, rows_e = explicit(x, gate, layout)
    torch.testing.assert_close(out_f, out_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows_f, rows_e)
    # class rows are exactly the class-token rows / patch columns of the full attention matrix
    q, k, _ = fused.qkv(x).reshape(2, 11, 3, 4, 8).permute(2, 0, 3, 1, 4)
    full = ((q * 8 ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    torch.testing.assert_close(rows_f, full[:, :, 0:3, 3:10])


def test_closed_head_contributes_nothing():
    torch.manual_seed(0)
    attn = GatedAttention(32, num_heads=4)
    x = torch.randn(1, 6, 32)
    base, _ = attn(x, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with torch.no_grad():  # perturb only head 1's value projection: output must not move
        attn.qkv.weight[64 + 8:64 + 16].add_(torch.randn(8, 32))
    moved, _ = attn(x, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(base, moved)


def test_whole_model_fused_equals_explicit():
    torch.manual_seed(0)
    model = KyamViT(tiny()).eval()
    x = torch.randn(2, 3, 32, 48)
    a = model(x, return_attention=True)
    for block in model.blocks:
        block.attn.fused = False
    b = model(x, return_attention=True)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.class_attention, b.class_attention)


@pytest.mark.parametrize("gated", [False, True])
def test_without_gates_or_with_all_gates_open_it_is_a_plain_timm_vit(gated):
    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1, img_size=32,
                                  patch_size=8, embed_dim=32, depth=3, num_heads=4).eval()
    model = KyamViT(tiny(num_classes=1, image_size=(32, 32), use_reg_token=False, use_head_gates=gated)).eval()
    init_from_timm(model, reference.state_dict())
    model.head.load_state_dict(reference.head.state_dict())
    if gated:
        with torch.no_grad():
            for block in model.blocks:
                block.head_gate.log_alpha.fill_(5.0)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(model(x).logits, reference(x), rtol=1e-4, atol=1e-5)


def test_masking_only_in_training_and_only_with_labels():
    torch.manual_seed(0)
    model = KyamViT(tiny(mask_rate=1.0, use_head_gates=False))
    x = torch.randn(2, 3, 32, 48)
    labels = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0]])
    model.eval()
    plain = model(x).logits
    assert torch.equal(model(x, labels=labels).logits, plain)  # evaluation: never masked
    model.train()
    masked = model(x, labels=labels).logits
    assert not torch.allclose(masked, plain)
    assert torch.equal(model(x).logits, plain)  # no labels: nothing to mask (no dropout/drop-path here)


@pytest.mark.parametrize("classifier", ["token_mean", "cam"])
def test_baseline_classifiers(classifier):
    model = KyamViT(tiny(classifier=classifier, use_reg_token=False, use_head_gates=False)).eval()
    out = model(torch.randn(2, 3, 32, 48), return_attention=True)
    assert out.logits.shape == (2, 5)
    if classifier == "cam":
        assert out.patch_logits.shape == (2, 5, 24)
        model.head.bias.data.uniform_(-1, 1)
        out = model(torch.randn(2, 3, 32, 48), return_attention=True)
        # maps without the bias (standard CAM), logits = pooled maps + bias
        torch.testing.assert_close(out.logits, out.patch_logits.mean(-1) + model.head.bias)
        assert out.class_attention.shape == (2, 3, 4, 1, 24)


@pytest.mark.parametrize("variant", ["class_tokens", "token_mean", "cam"])
def test_every_classifier_sends_the_backbone_a_gradient_at_initialisation(variant):
    """A logit pinned by a LayerNorm (the channel mean of a normalised token) gives the backbone
    no gradient at initialisation; every classifier kind must give it one of comparable size."""
    norms = {}
    for kind in ("class_tokens", variant):
        torch.manual_seed(0)
        model = KyamViT(baseline_config(kind, use_head_gates=False)).train()
        images, labels = torch.randn(8, 3, 32, 32), (torch.rand(8, 5) < 0.3).float()
        model.loss(model(images), labels).backward()
        norms[kind] = torch.stack([p.grad.norm() for n, p in model.named_parameters()
                                   if n.startswith("blocks.") and p.grad is not None]).norm()
    assert norms[variant] > 0.005 * norms["class_tokens"], norms  # within 200x; a pinned logit gives ~0


def test_token_mean_logit_is_the_raw_class_token_mean():
    model = KyamViT(tiny(classifier="token_mean", use_reg_token=False, use_head_gates=False)).eval()
    captured = {}
    model.norm.register_forward_hook(lambda *args: captured.setdefault("normed", True))
    out = model(torch.randn(2, 3, 32, 32))
    assert "normed" not in captured  # the final norm would pin the mean to its bias
    assert out.logits.abs().max() > 0


def test_losses():
    model = KyamViT(tiny())
    logits = torch.tensor([[2.0, -1.0, 0.0, 0.5, -3.0]])
    labels = torch.tensor([[1.0, 0, 0, 1, 0]])
    out = type("O", (), {"logits": logits})()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    torch.testing.assert_close(model.loss(out, labels), expected)
    single = KyamViT(tiny(multi_label=False))
    one_hot = torch.tensor([[0.0, 0, 0, 1, 0]])
    torch.testing.assert_close(single.loss(out, one_hot), torch.nn.functional.cross_entropy(logits, torch.tensor([3])))


def test_model_sizes_are_named_configs():
    assert model_size("tiny") == ModelSize(embed_dim=64, depth=4, num_heads=4)
    assert model_size("base") == ModelSize(embed_dim=768, depth=12, num_heads=16)  # the paper's ViT-B
    with pytest.raises(dataclasses.FrozenInstanceError):
        model_size("small").depth = 3
    with pytest.raises(ValueError, match="unknown model size 'huge'; known sizes: tiny, small, base"):
        model_size("huge")


# ---- the classifier heads: state_dict keys, initialisation and logits stay what checkpoints hold ----
CLASSIFIERS = ("class_tokens", "token_mean", "cam")


def baseline_config(classifier: str, **overrides) -> ModelConfig:
    values = dict(classifier=classifier, use_reg_token=classifier == "class_tokens",
                  use_head_gates=classifier == "class_tokens", mask_rate=0.5)
    values.update(overrides)
    return tiny(**values)


def reference_initialisation(config: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """The weights of `torch.manual_seed(seed); KyamViT(config)`, drawn part by part in the model's order:
    construction (patch embedding; per block its gate, qkv, proj, fc1, fc2; the head), then the token
    and position parameters, then every Linear weight again (truncated normal) with zero biases."""
    D, C, H = config.embed_dim, config.num_classes, config.num_heads
    hidden = int(D * config.mlp_ratio)
    torch.manual_seed(seed)
    patch_embed = torch.nn.Conv2d(config.in_channels, D, config.patch_size, stride=config.patch_size)
    weights = {"patch_embed.proj.weight": patch_embed.weight, "patch_embed.proj.bias": patch_embed.bias}
    linears = {}
    for index in range(config.depth):
        if config.use_head_gates:
            weights[f"blocks.{index}.head_gate.log_alpha"] = torch.empty(H).uniform_(-config.gate_init_range,
                                                                                   config.gate_init_range)
        for name, (fan_in, fan_out) in {"attn.qkv": (D, 3 * D), "attn.proj": (D, D), "mlp.fc1": (D, hidden),
                                        "mlp.fc2": (hidden, D)}.items():
            linears[f"blocks.{index}.{name}"] = torch.nn.Linear(fan_in, fan_out)
        for norm in ("norm1", "norm2"):
            weights[f"blocks.{index}.{norm}.weight"], weights[f"blocks.{index}.{norm}.bias"] = torch.ones(D), torch.zeros(D)
    weights["norm.weight"], weights["norm.bias"] = torch.ones(D), torch.zeros(D)
    if config.classifier != "token_mean":
        linears["head"] = torch.nn.Linear(C * D if config.classifier == "class_tokens" else D, C)
    class_tokens = 1 if config.classifier == "cam" else C
    grid = config.image_size[0] // config.patch_size * (config.image_size[1] // config.patch_size)
    for name, rows in (("class_tokens", class_tokens), ("class_pos_embed", class_tokens), ("patch_pos_embed", grid),
                       ("reg_token", int(config.use_reg_token)), ("reg_pos_embed", int(config.use_reg_token))):
        weights[name] = timm.layers.trunc_normal_(torch.zeros(1, rows, D), std=0.02)
    for name, linear in linears.items():
        weights[f"{name}.weight"] = timm.layers.trunc_normal_(linear.weight.detach().clone(), std=0.02)
        weights[f"{name}.bias"] = torch.zeros_like(linear.bias)
    return {name: value.detach() for name, value in weights.items()}


@pytest.mark.parametrize("classifier", CLASSIFIERS)
@pytest.mark.parametrize("seed", [0, 7])
def test_initialisation_draws_the_rng_in_the_reference_order(classifier, seed):
    config = baseline_config(classifier)
    torch.manual_seed(seed)
    state = KyamViT(config).state_dict()
    reference = reference_initialisation(config, seed)
    assert sorted(state) == sorted(reference)
    assert [name for name in state if not torch.equal(state[name], reference[name])] == []


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_head_state_dict_keys_are_those_of_stored_checkpoints(classifier):
    state = KyamViT(baseline_config(classifier)).state_dict()
    head = {name: tuple(value.shape) for name, value in state.items() if name.startswith("head")}
    assert head == {"class_tokens": {"head.weight": (5, 5 * 32), "head.bias": (5,)},
                    "token_mean": {},
                    "cam": {"head.weight": (5, 32), "head.bias": (5,)}}[classifier]
    assert state["class_tokens"].shape == (1, 1 if classifier == "cam" else 5, 32)
    assert list(state)[-len(head) - 2:] == ["norm.weight", "norm.bias", *head]  # the head is registered last


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_logits_are_the_head_formula_on_the_last_block_tokens(classifier):
    torch.manual_seed(0)
    model = KyamViT(baseline_config(classifier)).train()
    images, labels = torch.randn(3, 3, 32, 48), torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 1]])
    uniforms, noise = torch.rand(3, 5), torch.rand(3, 4)
    out = model(images, labels=labels, mask_uniforms=uniforms, gate_noise=noise)
    grid = model.grid_size((32, 48))
    layout = model.layout(grid)
    x, gates, _ = model.run_blocks(model.tokens(images, grid), None, gate_noise=noise)
    if classifier == "class_tokens":
        kept = ~((labels == 0) & (uniforms < 0.5))
        features = (model.norm(x[:, :5]) * kept[..., None]).flatten(1)
        expected = features @ model.head.weight.T + model.head.bias
    elif classifier == "token_mean":
        expected = x[:, :5].mean(-1)
    else:
        patch_logits = model.norm(x[:, layout.patches]) @ model.head.weight.T  # (B, P, C), no bias
        torch.testing.assert_close(out.patch_logits, patch_logits.transpose(1, 2))
        expected = patch_logits.mean(1) + model.head.bias
    torch.testing.assert_close(out.logits, expected)
    assert torch.equal(out.head_gates, gates)
    assert (out.patch_logits is None) == (classifier != "cam")


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_every_head_is_a_classifier_head_and_sets_the_class_token_count(classifier):
    from kyam_lib.method.model import CLASSIFIER_HEADS, ClassifierHead

    config = baseline_config(classifier)
    head = CLASSIFIER_HEADS[classifier].from_config(config)
    assert isinstance(head, ClassifierHead)
    tokens = CLASSIFIER_HEADS[classifier].num_class_tokens(config.num_classes)
    assert tokens == (1 if classifier == "cam" else config.num_classes)
    assert KyamViT(config).num_class_tokens == tokens


def colour_squares(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (count, 3, 32, 32) of noise with one 8x8 square per present class, class k in colour k;
    each of the 5 classes is present with probability 0.3 (all-negative rate ~0.7)."""
    colours = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [-1, 1, 1]])
    labels = (torch.rand(count, 5, generator=generator) < 0.3).float()
    images = 0.3 * torch.randn(count, 3, 32, 32, generator=generator)
    cells = torch.rand(count, 16, generator=generator).argsort(dim=1)[:, :5]  # a distinct 8x8 cell per class
    for index, k in labels.nonzero().tolist():
        row, col = divmod(int(cells[index, k]), 4)
        images[index, :, 8 * row:8 * row + 8, 8 * col:8 * col + 8] = colours[k, :, None, None]
    return images, labels


@pytest.mark.parametrize("variant", CLASSIFIERS)
def test_every_classifier_learns_above_the_all_negative_rate_on_a_tiny_set(variant):
    """Each compared classifier, trained 20 epochs on colour squares (~1 s), beats answering "absent" for every
    class on held-out images; a logit pinned at initialisation stays at the all-negative rate."""
    generator = torch.Generator().manual_seed(0)
    train_images, train_labels = colour_squares(256, generator)
    val_images, val_labels = colour_squares(128, generator)
    torch.manual_seed(0)
    model = KyamViT(baseline_config(variant, image_size=(32, 32)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(20):
        for start in range(0, 256, 32):
            batch = slice(start, start + 32)
            loss = model.loss(model(train_images[batch], labels=train_labels[batch]), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = classifier_accuracy(model.eval()(val_images).logits, val_labels, from_logits=True)
    all_negative = chance_accuracy(val_labels, multi_label=True)
    assert accuracy > all_negative + 0.2, (accuracy, all_negative)
