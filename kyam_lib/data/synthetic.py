"""The embedded default data: two SYNTHETIC datasets written in real on-disk formats.

- `generate_shapes`: textured objects on cluttered backgrounds, in PASCAL VOC layout with a
  ``labelmap.txt`` (read by the VOC loader). A class is a (shape, texture) pair; every shape
  occurs in several classes, and every class texture also occurs on distractors (other shapes)
  that belong to no class, so neither cue alone names the class, and instance colours are random. Its difficulty
  (the ``_SHAPES_*`` constants) is set so that the "quick" preset's tiny ViT learns it.
- `generate_regions`: land-cover-like scenes where every pixel has a class, in the DFC2020
  layout (13-band Sentinel-2-like and 2-band Sentinel-1-like GeoTIFFs, DFC and IGBP label
  GeoTIFFs, observation CSVs; read by the DFC2020 loader). Several classes share their
  visible-band spectrum, so they are told apart only with the red-edge, NIR and SWIR bands.

Both are deterministic: the same arguments give byte-identical files (every image draws from
its own generator seeded by (seed, split, index)). Each set is written into a temporary folder
beside `root` and renamed onto it at the end, so a killed run never leaves a half set.
"""
from __future__ import annotations

import colorsys
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage, special

from .palette import palette, palette_png_bytes

__all__ = ["GENERATOR_VERSIONS", "generator_version", "SHAPE_NAMES", "TEXTURE_NAMES", "shape_classes",
           "draw_shapes_image", "generate_shapes", "REGION_CLASS_NAMES", "REGION_S2_SIGNATURES",
           "REGION_S1_SIGNATURES", "draw_regions_scene", "generate_regions", "regions_band_statistics"]

# Shapes that differ most at the scale of an 8 x 8 patch, and two-colour textures only (a plain
# one-colour object would be told from two-colour ones by a colour histogram).
SHAPE_NAMES = ("disk", "ring", "cross")
TEXTURE_NAMES = ("hstriped", "vstriped", "dstriped", "checkered", "dotted", "ringed")
_SPLIT_CODES = {"train": 1, "val": 2}
# Bumped whenever a generator's output changes, so that `ensure_dataset` replaces old sets.
GENERATOR_VERSIONS = {"shapes": 4, "regions": 1}

# `shapes` difficulty. Version 1 (up to 4 class instances and 3 distractors, 13-41 px objects,
# textures at any orientation, objects and clutter in the background's colours) left every
# model at chance; these values keep each requirement (1-3 classes, shapes and textures shared
# by classes and distractors, random hues, distractors, clutter, occlusion, scale) at a level
# that the tiny ViT of the "quick" preset learns from. Version 4 halves the distractor rate
# (0.5 -> 0.25): at 0.5 the CAM baseline's classifier plateaued at 0.86 val accuracy and the gated
# runs at 0.88-0.89 (all-negative rate 0.71); at 0.25, 0.91 and 0.92 (seed 0, quick preset).
_SHAPES_CLASSES_PER_IMAGE = (0.5, 0.3, 0.2)  # P(1, 2, 3 classes in an image), about VOC's mix
_SHAPES_SECOND_INSTANCE = 0.1           # P(a second instance of one class | 1 or 2 classes)
_SHAPES_DISTRACTOR = 0.25               # P(one distractor, an object of no class, in an image)
_SHAPES_RADIUS = (0.25, 0.35)           # object radius / image size: 32-45 px across at 64 px ...
_SHAPES_CROWD_SHRINK = {3: 0.85, 4: 0.78}  # ... times this with 3 or 4 objects in the image
_SHAPES_CENTRE = (0.25, 0.75)           # object centre / image size, each coordinate
_SHAPES_MIN_VISIBLE = (0.8, 0.5)        # least visible fraction of a class instance, a distractor
_SHAPES_OBJECT_HSV = ((0.6, 1.0), (0.7, 1.0))      # saturation, value ranges (hue uniform)
_SHAPES_BACKGROUND_HSV = ((0.0, 0.3), (0.3, 0.65))  # of the background field's two colours
_SHAPES_CLUTTER = (1, 3)                # strokes, and blobs, per image: uniform in [lo, hi]
_SHAPES_CLUTTER_CONTRAST = (0.15, 0.3)  # clutter colour = field mean + this x (random - mean)
_SHAPES_BACKGROUND_TEXTURE = (0.5, 0.04, 0.1)  # probability, strength range of a faint texture
# Texture orientation within +-7.5 degrees of the image axes (a texture is, e.g., horizontal
# stripes): fully random orientations cost the tiny ViT most of what it learns in a short run.
_SHAPES_TEXTURE_JITTER = np.pi / 24
# Texture periods x this: 3-4 px at 64 px, two or more periods per 8 x 8 patch. At about one
# period per patch (factor 1) a from-scratch tiny ViT stays near chance for 10 epochs (val acc
# 0.76 vs 0.71 chance; a 4-layer CNN gets 0.95 on the same images); at 0.35, with objects
# 32-45 px across, it leaves chance after 2-3 epochs and reaches about 0.85 in 8.
_SHAPES_TEXTURE_PERIOD = 0.35
# A context that co-occurs with one class but is background in the masks (VOC's boat on water):
# (class index, P(water | the class is in the image), P(water | it is not)). Instances of that
# class sit on the water. A classifier may learn "water => class 0"; class-specific maps must not
# paint the water.
_SHAPES_CONTEXT = (0, 0.8, 0.08)
_SHAPES_WATER_HSV = ((0.5, 0.62), (0.35, 0.6), (0.35, 0.6))  # hue, saturation, value ranges
_SHAPES_HORIZON = (0.4, 0.6)            # water line / image size

# ------------------------------------------------------------------------------------------
# shapes
# ------------------------------------------------------------------------------------------
def shape_classes(num_classes: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(classes, distractors) as (shape, texture) pairs.

    Class k has texture k and shape k mod 3 (disk, ring, cross), so each of the 3 shapes
    belongs to several classes. Distractors are every other pairing of those shapes with the
    class textures: a class's texture on another class's shape. Shape alone never names a
    class, and texture alone names it only until a distractor wears that texture, so only
    shape and texture together identify a class.
    """
    if not 2 <= num_classes <= len(TEXTURE_NAMES):
        raise ValueError(f"num_classes must be in [2, {len(TEXTURE_NAMES)}], got {num_classes}")
    classes = [(SHAPE_NAMES[k % len(SHAPE_NAMES)], TEXTURE_NAMES[k]) for k in range(num_classes)]
    distractors = [(shape, texture) for _, texture in classes for shape in SHAPE_NAMES
                   if (shape, texture) not in classes]
    return classes, distractors


def _shape(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean silhouette in the unit frame (u, v), each of area pi (a disk of radius 1).

    Equal areas keep an object's pixel count, which a colour histogram sees, from naming its
    shape. Cross arms and the ring's band are >= 0.6 radius wide, so a texture shows on them.
    """
    if kind == "disk":
        return u * u + v * v <= 1.0
    if kind == "cross":
        au, av = np.abs(u), np.abs(v)  # arms 0.84 wide, 2.3 long: 2 * 0.84 * 2.3 - 0.84^2 = pi
        return ((au <= 0.42) & (av <= 1.15)) | ((av <= 0.42) & (au <= 1.15))
    if kind == "ring":
        rr = u * u + v * v  # radii 0.5 and 1.12: pi * (1.12^2 - 0.5^2) = pi
        return (rr <= 1.12 ** 2) & (rr >= 0.25)
    raise ValueError(f"unknown shape {kind!r}")


def _texture(kind: str, rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, scale: float) -> np.ndarray:
    """Float {0, 1} pattern with a random phase and period, near axis-aligned; `scale` = image size / 64.

    Stripes, checks and rings are about 1.5-2 px wide at 64 px (the widths below x
    `_SHAPES_TEXTURE_PERIOD`), so an 8 x 8 patch holds two or more periods, and a pattern
    survives the loaders' resizing and JPEG. Every pattern covers about half the object, so
    the share of pattern colour does not name the texture.
    """
    angle = rng.uniform(-_SHAPES_TEXTURE_JITTER, _SHAPES_TEXTURE_JITTER)
    t1 = dx * np.cos(angle) + dy * np.sin(angle)
    t2 = -dx * np.sin(angle) + dy * np.cos(angle)
    if kind in ("hstriped", "vstriped"):
        width = rng.uniform(3.9, 5.1) * scale * _SHAPES_TEXTURE_PERIOD  # stripe width (half the period)
        return (np.floor((t2 if kind == "hstriped" else t1) / width) % 2).astype(np.float32)
    if kind == "dstriped":  # diagonal, either way (a horizontal flip turns one into the other)
        width = rng.uniform(3.9, 5.1) * scale * _SHAPES_TEXTURE_PERIOD * np.sqrt(2)
        return (np.floor((t1 + t2 * rng.choice([-1.0, 1.0])) / width) % 2).astype(np.float32)
    if kind == "checkered":
        width = rng.uniform(4.8, 6.3) * scale * _SHAPES_TEXTURE_PERIOD
        return ((np.floor(t1 / width) + np.floor(t2 / width)) % 2).astype(np.float32)
    if kind == "ringed":
        width = rng.uniform(3.9, 5.1) * scale * _SHAPES_TEXTURE_PERIOD
        return (np.floor(np.sqrt(dx * dx + dy * dy) / width) % 2).astype(np.float32)
    if kind == "dotted":
        period = rng.uniform(9.5, 12.0) * scale * _SHAPES_TEXTURE_PERIOD
        a, b = t1 % period - period / 2, t2 % period - period / 2
        return (a * a + b * b <= (0.4 * period) ** 2).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}")


def _random_colour(rng: np.random.Generator, saturation=(0.25, 1.0), value=(0.3, 1.0)) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32)


def _pattern_colour(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A texture's second colour: `colour` darkened, so a texture is always a dark pattern on a
    bright random colour (one luminance polarity to learn; the hue stays random)."""
    return colour * rng.uniform(0.15, 0.4)


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Smooth two-colour field, an optional faint texture, and muted clutter strokes and blobs.

    Background colours are greyish and mid-dark and clutter colours are pulled towards the
    field's mean: the background stays busy but lower in contrast than the objects.
    """
    scale = size / 64
    c1 = _random_colour(rng, *_SHAPES_BACKGROUND_HSV)
    c2 = _random_colour(rng, *_SHAPES_BACKGROUND_HSV)
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma=size / 10)
    field = 1.0 / (1.0 + np.exp(-3.0 * field / (field.std() + 1e-6)))
    image = c1 + (c2 - c1) * field[..., None]
    mean = image.reshape(-1, 3).mean(axis=0)

    def muted() -> np.ndarray:
        return mean + rng.uniform(*_SHAPES_CLUTTER_CONTRAST) * (_random_colour(rng) - mean)

    chance, *strength = _SHAPES_BACKGROUND_TEXTURE
    if rng.uniform() < chance:
        # A faint texture over the whole background: texture alone cannot mark an object.
        kind = TEXTURE_NAMES[rng.integers(len(TEXTURE_NAMES))]
        pattern = _texture(kind, rng, xx - rng.uniform(0, size), yy - rng.uniform(0, size), scale)
        image = image * (1.0 - rng.uniform(*strength) * pattern[..., None])
    for _ in range(rng.integers(_SHAPES_CLUTTER[0], _SHAPES_CLUTTER[1] + 1)):  # strokes
        x0, y0 = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.6) * size
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / (length * length), 0, 1)
        dist = np.hypot(xx - (x0 + t * (x1 - x0)), yy - (y0 + t * (y1 - y0)))
        image[dist <= rng.uniform(0.6, 1.4) * scale] = muted()
    for _ in range(rng.integers(_SHAPES_CLUTTER[0], _SHAPES_CLUTTER[1] + 1)):  # blobs
        cx, cy = rng.uniform(0, size, 2)
        radius = rng.uniform(1.0, 3.5) * scale
        image[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius * radius] = muted()
    return image


def _water(rng: np.random.Generator, image: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> float:
    """Paint a blue-green water body below a wavy horizon onto `image` in place; returns the horizon row."""
    size = image.shape[0]
    horizon = rng.uniform(*_SHAPES_HORIZON) * size
    wave = rng.uniform(0.5, 1.5) * np.sin(xx[0] * rng.uniform(0.1, 0.3) + rng.uniform(0, 2 * np.pi))
    below = yy >= horizon + wave[None, :]
    hue, saturation, value = (rng.uniform(*r) for r in _SHAPES_WATER_HSV)
    colour = np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32)
    shade = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma=(size / 32, size / 8))
    shade = 1.0 + 0.12 * shade / (shade.std() + 1e-6)
    image[below] = colour * shade[below][:, None]
    return float(horizon)


def draw_shapes_image(rng: np.random.Generator, *, image_size: int, classes: list[tuple[str, str]],
                      distractors: list[tuple[str, str]], max_tries: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """One image: (H, W, 3) uint8 and its mask (H, W) uint8 (0 background, k+1 class k, 255 void).

    1, 2 or 3 classes (P = 0.5, 0.3, 0.2; with 1 or 2, one class has a second instance in 10 %
    of images) and, in a quarter of the images, one distractor are painted in random order with a
    random size (32-45 px across at 64 px, 0.85x / 0.78x that with 3 / 4 objects), rotation,
    aspect, hue and texture phase, so they may occlude each other; the placement is redrawn
    until every class instance keeps >= 80 % of its area (a distractor >= 50 %) visible. The
    void band is 2 px wide and follows every class-instance boundary, as in VOC. Water (background
    in the mask) fills the lower part of 80 % of the images holding class 0, with class 0 on it,
    and of 8 % of the others.
    """
    size = image_size
    scale = size / 64
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    background = _background(rng, size, yy, xx)
    count = 1 + rng.choice(len(_SHAPES_CLASSES_PER_IMAGE), p=_SHAPES_CLASSES_PER_IMAGE)
    chosen = rng.choice(len(classes), size=count, replace=False)
    objects = [(int(c), classes[c]) for c in chosen]
    if count < 3 and rng.uniform() < _SHAPES_SECOND_INSTANCE:
        objects.append(objects[0])
    if rng.uniform() < _SHAPES_DISTRACTOR:
        objects.append((-1, distractors[rng.integers(len(distractors))]))
    class_of = np.array([c for c, _ in objects] + [-1])  # owner -1 indexes the trailing -1
    is_class = class_of[:-1] >= 0
    context_class, p_with, p_without = _SHAPES_CONTEXT
    horizon = None
    if rng.uniform() < (p_with if context_class in class_of else p_without):
        horizon = _water(rng, background, yy, xx)
    on_water = class_of[:-1] == (context_class if horizon is not None else -2)
    shrink = _SHAPES_CROWD_SHRINK.get(len(objects), 1.0)
    for attempt in range(max_tries):
        if attempt and attempt % 100 == 0:
            shrink *= 0.9  # a crowded draw that keeps failing (about 1 image in 1,000) gets smaller objects
        # Place silhouettes first (cheap); paint only an accepted layout.
        order = rng.permutation(len(objects))
        owner = np.full((size, size), -1, dtype=np.int64)
        area = np.zeros(len(objects), dtype=np.int64)
        placed = []
        for obj in order:
            radius = rng.uniform(*_SHAPES_RADIUS) * shrink * size
            cx, cy = rng.uniform(_SHAPES_CENTRE[0] * size, _SHAPES_CENTRE[1] * size, 2)
            if on_water[obj]:  # the context's class floats on the water
                cy = rng.uniform(max(horizon, _SHAPES_CENTRE[0] * size), 0.8 * size)
            angle, aspect = rng.uniform(0, 2 * np.pi), np.exp(rng.uniform(-0.15, 0.15))
            dx, dy = xx - cx, yy - cy
            u = (dx * np.cos(angle) + dy * np.sin(angle)) / (radius * aspect)
            v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (radius / aspect)
            silhouette = _shape(objects[obj][1][0], u, v)
            area[obj] = silhouette.sum()
            owner[silhouette] = obj
            placed.append((obj, silhouette, dx, dy, angle, radius))
        visible = np.bincount(owner[owner >= 0], minlength=len(objects))
        if np.all(visible >= np.where(is_class, *_SHAPES_MIN_VISIBLE) * area):
            break
    else:
        raise RuntimeError(f"no valid layout in {max_tries} tries (image_size={image_size} too small?)")
    pixel_class = class_of[owner]
    instance = np.where(pixel_class >= 0, owner + 1, 0)
    border = ndimage.maximum_filter(instance, size=3) != ndimage.minimum_filter(instance, size=3)
    image = background
    for obj, silhouette, dx, dy, angle, radius in placed:
        dx, dy = dx[silhouette], dy[silhouette]  # only the object's pixels
        colour = _random_colour(rng, *_SHAPES_OBJECT_HSV)
        pattern = _texture(objects[obj][1][1], rng, dx, dy, scale)[:, None]
        fill = colour + (_pattern_colour(rng, colour) - colour) * pattern
        shading = 1.0 + rng.uniform(-0.15, 0.15) * (dx * np.cos(angle) + dy * np.sin(angle)) / radius
        image[silhouette] = fill * shading[:, None]
    mask = np.where(pixel_class >= 0, pixel_class + 1, 0)
    mask[border] = 255
    image = image + rng.normal(0.0, 0.025, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask.astype(np.uint8)


def _fresh_dir(root: Path) -> Path:
    """A temporary folder beside `root`; the caller renames it onto `root` when complete."""
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: already exists and is not empty")
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.partial-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the published set should read like any folder
    return tmp


def _publish(tmp: Path, root: Path) -> Path:
    try:
        if root.exists():
            root.rmdir()  # empty (checked in _fresh_dir); rename needs the name free
        os.rename(tmp, root)
    except OSError as err:  # another process published the set first
        raise FileExistsError(f"{root}: already exists and is not empty ({err})") from err
    return root




def generate_shapes(root: str | os.PathLike, *, seed: int = 0, num_train: int = 6000, num_val: int = 500,
                    image_size: int = 64, num_classes: int = 6) -> Path:
    """Write the SYNTHETIC `shapes` set in PASCAL VOC layout into `root` (must not exist or be empty).

    Layout: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG: 0 background,
    k + 1 = class k, 255 void), ``ImageSets/Segmentation/{train,val,trainval}.txt``,
    ``labelmap.txt``, ``README.txt``. Returns `root`.
    """
    if not 16 <= image_size <= 512:
        raise ValueError(f"image_size must be in 16..512, got {image_size}")
    root = Path(root)
    classes, distractors = shape_classes(num_classes)
    class_names = [f"{texture}_{shape}" for shape, texture in classes]
    start = time.perf_counter()
    tmp = _fresh_dir(root)
    try:
        for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (tmp / folder).mkdir(parents=True)
        split_ids: dict[str, list[str]] = {}
        for split, count in (("train", num_train), ("val", num_val)):
            ids = [f"{split}_{i:06d}" for i in range(count)]
            for i, image_id in enumerate(ids):
                rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
                image, mask = draw_shapes_image(rng, image_size=image_size, classes=classes,
                                                distractors=distractors)
                Image.fromarray(image).save(tmp / "JPEGImages" / f"{image_id}.jpg", format="JPEG", quality=90)
                (tmp / "SegmentationClass" / f"{image_id}.png").write_bytes(palette_png_bytes(mask))
            split_ids[split] = ids
        for split, ids in (*split_ids.items(), ("trainval", split_ids["train"] + split_ids["val"])):
            (tmp / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        colours = palette(256)
        lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
        lines += [f"{name}:{','.join(str(int(c)) for c in colours[k + 1])}::" for k, name in enumerate(class_names)]
        (tmp / "labelmap.txt").write_text("\n".join(lines) + "\n")
        (tmp / "README.txt").write_text(_SHAPES_README.format(
            version=GENERATOR_VERSIONS["shapes"],
            seed=seed, num_train=num_train, num_val=num_val, image_size=image_size, num_classes=num_classes,
            classes="\n".join(f"  {k + 1}: {n}" for k, n in enumerate(class_names)),
            distractors=", ".join(f"{t}_{s}" for s, t in distractors), context_class=class_names[_SHAPES_CONTEXT[0]],
        ))
        _publish(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    _log(f"generated SYNTHETIC shapes ({num_train}+{num_val} images) in {time.perf_counter() - start:.1f} s: {root}")
    return root


_SHAPES_README = """\
SYNTHETIC DATA — the kyam "shapes" set. These are not photographs.
generator version {version}: kyam_lib.data.synthetic.generate_shapes(seed={seed}, num_train={num_train}, num_val={num_val},
image_size={image_size}, num_classes={num_classes}).

Layout: PASCAL VOC (JPEGImages/, SegmentationClass/ palette PNGs, ImageSets/Segmentation/,
labelmap.txt naming the classes). Mask values: 0 = background, k = class k of labelmap.txt,
255 = void (a 2 px band on every object boundary, as in VOC).

A class is a (shape, texture) pair: class k has its own texture and one of 3 shapes (disk,
ring, cross), each shape shared by several classes. Distractor objects, which belong to no
class (background in the masks), wear a class's texture on another class's shape, and object
hues are random, so neither colour, shape alone nor texture alone identifies a class. Each image
holds 1, 2 or 3 classes (50 / 30 / 20 %; sometimes a second instance) at random scale (32-45 px
across at 64 px), rotation and aspect, painted in random order so that they may occlude each
other (>= 80 % of every class instance stays visible), on a greyish background with a faint
texture and muted clutter strokes and blobs; a quarter of the images also hold one distractor.
Context: blue-green water (background in the masks) fills the lower part of 80 % of the images
that hold class 1 ({context_class}), which floats on it, and of 8 % of the others, as boats and
water in VOC: a classifier may learn the water, a class-specific map must not paint it.
Textures are dark patterns on a bright object colour (hstriped = horizontal stripes, vstriped =
vertical, dstriped = diagonal either way), with a period of 3-4 px, finer than an 8 x 8 patch.

Classes:
{classes}
Distractors (background): {distractors}
"""


# ------------------------------------------------------------------------------------------
# regions
# ------------------------------------------------------------------------------------------
# The eight DFC2020 classes in the loader's order, with their DFC codes (Savanna 3 and
# Snow/Ice 8 are dropped by the protocol and appear here only as ignore regions).
REGION_CLASS_NAMES = ("forest", "shrubland", "grassland", "wetland", "cropland", "urban", "barren", "water")
_REGION_DFC_CODES = np.array([1, 2, 4, 5, 6, 7, 9, 10], dtype=np.uint8)
# One IGBP code per class for the coarse `lc` labels (IGBP → DFC maps each back to the class).
_REGION_IGBP_CODES = np.array([4, 6, 10, 11, 12, 13, 16, 17], dtype=np.uint8)

# Top-of-atmosphere reflectance per band B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B10 B11 B12,
# shaped after typical land-cover spectra. Forest, wetland and water share B02-B04 (dark
# green/blue), shrubland and grassland share them, and so do cropland and urban: in the
# visible bands these groups are one colour, and only the red-edge/NIR/SWIR bands split them.
REGION_S2_SIGNATURES = np.array([
    [0.090, 0.070, 0.060, 0.040, 0.080, 0.200, 0.250, 0.270, 0.290, 0.090, 0.004, 0.140, 0.070],  # forest
    [0.100, 0.085, 0.085, 0.080, 0.120, 0.190, 0.220, 0.240, 0.250, 0.080, 0.004, 0.240, 0.150],  # shrubland
    [0.100, 0.085, 0.085, 0.080, 0.130, 0.240, 0.300, 0.320, 0.340, 0.100, 0.004, 0.210, 0.120],  # grassland
    [0.090, 0.070, 0.060, 0.040, 0.060, 0.100, 0.120, 0.130, 0.130, 0.050, 0.003, 0.080, 0.050],  # wetland
    [0.110, 0.100, 0.100, 0.110, 0.140, 0.190, 0.230, 0.250, 0.270, 0.090, 0.004, 0.280, 0.190],  # cropland
    [0.120, 0.100, 0.100, 0.110, 0.120, 0.140, 0.150, 0.160, 0.170, 0.060, 0.005, 0.190, 0.160],  # urban
    [0.150, 0.140, 0.160, 0.190, 0.210, 0.230, 0.240, 0.250, 0.260, 0.090, 0.005, 0.330, 0.270],  # barren
    [0.090, 0.070, 0.060, 0.040, 0.040, 0.030, 0.030, 0.020, 0.020, 0.010, 0.002, 0.010, 0.010],  # water
], dtype=np.float64)
# Sentinel-1 backscatter (VV, VH) in dB per class.
REGION_S1_SIGNATURES = np.array([
    [-7.0, -13.0], [-9.0, -16.0], [-10.0, -17.0], [-11.0, -18.0],
    [-9.0, -16.0], [-4.0, -10.0], [-14.0, -22.0], [-20.0, -27.0],
], dtype=np.float64)
_REGION_TEXTURE = np.array([0.08, 0.06, 0.04, 0.05, 0.05, 0.15, 0.05, 0.03])  # per-pixel relative noise
_REGION_GAIN_STD = 0.10      # per class and scene: illumination/phenology
_REGION_SMOOTH_STD = 0.05    # smooth within-scene variation
_REGION_HAZE_MAX = 0.03      # additive haze at B01, fading towards the long wavelengths
_REGION_HAZE_PROFILE = np.array([1.0, 0.8, 0.6, 0.45, 0.35, 0.3, 0.25, 0.2, 0.2, 0.2, 0.0, 0.05, 0.02])
_REGION_S1_GAIN_STD = 1.0    # dB, per class and scene
_S1_LOOKS = 4                # speckle: intensity ~ Gamma(L, 1/L)


def draw_regions_scene(rng: np.random.Generator, *, image_size: int) -> dict[str, np.ndarray]:
    """One scene: ``s2`` (13, H, W) uint16 DN (reflectance x 10000), ``s1`` (2, H, W) float32 dB,
    ``dfc`` (H, W) uint8 DFC codes, ``lc`` (H, W) uint8 IGBP codes, ``classes`` (H, W) int64.

    1-4 classes fill the scene as the argmax of smoothed noise fields (smooth, organic regions).
    Some scenes get savanna patches (DFC code 3, dropped by the protocol → ignore) or an
    unlabelled strip (code 0 → ignore).
    """
    size = image_size
    num = rng.choice([1, 2, 3, 4], p=[0.1, 0.3, 0.35, 0.25])
    chosen = rng.choice(len(REGION_CLASS_NAMES), size=num, replace=False)
    sigma = rng.uniform(size / 14, size / 7)
    fields = ndimage.gaussian_filter(rng.standard_normal((num, size, size)), sigma=(0, sigma, sigma))
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-9
    rough = ndimage.gaussian_filter(rng.standard_normal((num, size, size)), sigma=(0, 1.5, 1.5))
    fields += 0.2 * rough / (rough.std(axis=(1, 2), keepdims=True) + 1e-9) + rng.normal(0, 0.4, (num, 1, 1))
    classes = chosen[np.argmax(fields, axis=0)].astype(np.int64)
    dfc = _REGION_DFC_CODES[classes]
    lc = _REGION_IGBP_CODES[classes]
    signatures = REGION_S2_SIGNATURES[classes]  # (H, W, 13)
    if rng.uniform() < 0.25:
        blobs = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=size / 16)
        savanna = blobs > np.quantile(blobs, rng.uniform(0.9, 0.97))
        dfc = np.where(savanna, 3, dfc).astype(np.uint8)
        lc = np.where(savanna, 9, lc).astype(np.uint8)
        signatures = np.where(savanna[..., None], REGION_S2_SIGNATURES[[1, 2]].mean(axis=0), signatures)
    if rng.uniform() < 0.1:
        width = int(rng.integers(3, max(4, size // 5)))
        strip = np.zeros((size, size), dtype=bool)
        edge = rng.integers(4)
        if edge == 0:
            strip[:width] = True
        elif edge == 1:
            strip[-width:] = True
        elif edge == 2:
            strip[:, :width] = True
        else:
            strip[:, -width:] = True
        dfc = np.where(strip, 0, dfc).astype(np.uint8)
    gain = rng.normal(1.0, _REGION_GAIN_STD, len(REGION_CLASS_NAMES))[classes]
    smooth = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=3.0)
    smooth = 1.0 + _REGION_SMOOTH_STD * smooth / (smooth.std() + 1e-9)
    noise = 1.0 + _REGION_TEXTURE[classes][..., None] * rng.standard_normal((size, size, 13))
    haze = rng.uniform(0, _REGION_HAZE_MAX) * _REGION_HAZE_PROFILE
    reflectance = signatures * (gain * smooth)[..., None] * noise + haze
    s2 = np.clip(np.rint(reflectance * 10000), 0, 65535).astype(np.uint16).transpose(2, 0, 1)
    s1_gain = rng.normal(0.0, _REGION_S1_GAIN_STD, (len(REGION_CLASS_NAMES), 2))[classes]
    speckle = rng.gamma(_S1_LOOKS, 1.0 / _S1_LOOKS, (size, size, 2))
    s1 = (REGION_S1_SIGNATURES[classes] + s1_gain + 10 * np.log10(speckle)).astype(np.float32).transpose(2, 0, 1)
    return {"s2": np.ascontiguousarray(s2), "s1": np.ascontiguousarray(s1), "dfc": dfc, "lc": lc,
            "classes": classes}


def regions_band_statistics() -> dict[str, tuple[float, ...]]:
    """Per-band mean and std implied by the `regions` generator's definition (uniform class prior).

    S2 in reflectance (DN / 10000): x = s_c * g * m * w + h, with gain g ~ N(1, sg^2),
    smooth factor m ~ N(1, sm^2), pixel noise w ~ N(1, a_c^2), haze h ~ U(0, hmax) * profile.
    S1 in dB: x = mu_c + N(0, sd^2) + 10 log10(Gamma(L, 1/L)).
    Savanna patches and clipping are left out (a few % of pixels).
    """
    sig = REGION_S2_SIGNATURES
    texture = _REGION_TEXTURE[:, None]
    haze_mean = _REGION_HAZE_PROFILE * _REGION_HAZE_MAX / 2
    haze_sq = (_REGION_HAZE_PROFILE * _REGION_HAZE_MAX) ** 2 / 3
    factor = (1 + _REGION_GAIN_STD ** 2) * (1 + _REGION_SMOOTH_STD ** 2)
    mean_s = sig.mean(axis=0)
    s2_mean = mean_s + haze_mean
    s2_sq = (sig ** 2 * (1 + texture ** 2)).mean(axis=0) * factor + 2 * mean_s * haze_mean + haze_sq
    s2_std = np.sqrt(s2_sq - s2_mean ** 2)
    db = 10 / np.log(10)
    speckle_mean = db * (special.digamma(_S1_LOOKS) - np.log(_S1_LOOKS))
    speckle_var = db ** 2 * special.polygamma(1, _S1_LOOKS)
    s1_mean = REGION_S1_SIGNATURES.mean(axis=0) + speckle_mean
    s1_std = np.sqrt(REGION_S1_SIGNATURES.var(axis=0) + _REGION_S1_GAIN_STD ** 2 + speckle_var)
    as_tuple = lambda a: tuple(round(float(x), 4) for x in a)  # noqa: E731
    return {"s2_mean": as_tuple(s2_mean), "s2_std": as_tuple(s2_std),
            "s1_mean": as_tuple(s1_mean), "s1_std": as_tuple(s1_std)}


def _geotiff_tags(index: int) -> list[tuple]:
    """Minimal GeoTIFF tags: 10 m pixels in UTM zone 32N, patches tiled along a row."""
    keys = (1, 1, 0, 3,  1024, 0, 1, 1,  1025, 0, 1, 1,  3072, 0, 1, 32632)
    origin = (300000.0 + 10 * 256 * (index % 400), 5600000.0 - 10 * 256 * (index // 400))
    return [
        (33550, "d", 3, (10.0, 10.0, 0.0), False),
        (33922, "d", 6, (0.0, 0.0, 0.0, origin[0], origin[1], 0.0), False),
        (34735, "H", len(keys), keys, False),
    ]


def _write_tif(path: Path, data: np.ndarray, index: int) -> None:
    planar = "separate" if data.ndim == 3 else None
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig=planar, metadata=None,
                     extratags=_geotiff_tags(index))


def generate_regions(root: str | os.PathLike, *, seed: int = 0, num_train: int = 2000, num_val: int = 500,
                     image_size: int = 64) -> Path:
    """Write the SYNTHETIC `regions` set in the DFC2020 layout into `root` (must not exist or be empty).

    The "test" release (the training split, as in the paper's protocol) gets `num_train`
    scenes and the "validation" release `num_val`:

        ROIs0000_test/{s1_0,s2_0,dfc_0,lc_0}/ROIs0000_test_{s1,s2,dfc,lc}_0_p<i>.tif
        ROIs0000_validation/{s1,s2,dfc,lc}_validation/ROIs0000_validation_{s1,s2,dfc,lc}_0_p<i>.tif
        test_observations.csv, validation_observations.csv   (Season, Scene, ID; no header)
        README.txt
    """
    if not 16 <= image_size <= 512:
        raise ValueError(f"image_size must be in 16..512, got {image_size}")
    root = Path(root)
    start = time.perf_counter()
    tmp = _fresh_dir(root)
    try:
        for release, count, code in (("test", num_train, 1), ("validation", num_val, 2)):
            folder = "0" if release == "test" else "validation"
            season = f"ROIs0000_{release}"
            for sensor in ("s1", "s2", "dfc", "lc"):
                (tmp / season / f"{sensor}_{folder}").mkdir(parents=True)
            rows = []
            for i in range(count):
                rng = np.random.default_rng([seed, code, i])
                scene = draw_regions_scene(rng, image_size=image_size)
                for sensor in ("s1", "s2", "dfc", "lc"):
                    _write_tif(tmp / season / f"{sensor}_{folder}" / f"{season}_{sensor}_0_p{i}.tif",
                               scene[sensor], i + code * 100000)
                rows.append((f"Seasons.{'TESTSET' if release == 'test' else 'VALSET'}", 0, i))
            with open(tmp / f"{release}_observations.csv", "w", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerows(rows)
        (tmp / "README.txt").write_text(_REGIONS_README.format(
            version=GENERATOR_VERSIONS["regions"],
            seed=seed, num_train=num_train, num_val=num_val, image_size=image_size,
            classes="\n".join(f"  {k}: {n} (DFC code {c})" for k, (n, c) in
                              enumerate(zip(REGION_CLASS_NAMES, _REGION_DFC_CODES)))))
        _publish(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    _log(f"generated SYNTHETIC regions ({num_train}+{num_val} scenes) in {time.perf_counter() - start:.1f} s: {root}")
    return root


_REGIONS_README = """\
SYNTHETIC DATA — the kyam "regions" set. These are not satellite images.
generator version {version}: kyam_lib.data.synthetic.generate_regions(seed={seed}, num_train={num_train}, num_val={num_val},
image_size={image_size}).

Layout: DFC2020. ROIs0000_test (the training split, {num_train} scenes) and ROIs0000_validation
({num_val} scenes), each with s2_* (13-band Sentinel-2-like uint16 DN = reflectance x 10000),
s1_* (2-band Sentinel-1-like float32 dB, VV and VH), dfc_* (uint8 DFC codes 0-10) and lc_*
(uint8 IGBP codes) GeoTIFFs, plus the observation CSVs (Season, Scene, ID).

Every pixel belongs to a land-cover-like class; regions are smooth random shapes. Classes
share visible-band spectra in groups (forest/wetland/water, shrubland/grassland,
cropland/urban), so they are separable only with several bands. DFC code 3 (savanna) patches
and code 0 strips become 255 = ignore under the DFC2020 protocol.

Classes (the loader's index: name, DFC code):
{classes}
"""


def generator_version(root: str | os.PathLike) -> int | None:
    """The generator version recorded in a generated set's README.txt (None if absent)."""
    readme = Path(root) / "README.txt"
    if not readme.is_file():
        return None
    for line in readme.read_text(errors="replace").splitlines()[:3]:
        if line.startswith("generator version "):
            try:
                return int(line.removeprefix("generator version ").split(":")[0])
            except ValueError:
                return None
    return None


def _log(message: str) -> None:
    print(message, flush=True)
