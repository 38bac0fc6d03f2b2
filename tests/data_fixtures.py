"""Tiny datasets written in each real dataset's exact on-disk layout, with hand-designed masks.

Each writer returns what the tests need to know about the fixture (ids, masks, expected labels).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from pycocotools import mask as mask_utils

from kyam_lib.data.palette import palette


def write_jpeg(path: Path, image: np.ndarray, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=quality)


def write_png(path: Path, array: np.ndarray, *, with_palette: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array.astype(np.uint8))
    if with_palette:
        img.putpalette(palette(256).ravel().tolist())
    img.save(path, format="PNG")


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------
# PASCAL VOC
# ------------------------------------------------------------------------------------------
def voc_masks() -> dict[str, np.ndarray]:
    """Hand-made masks (H=12, W=16 unless stated); VOC indices: 1 aeroplane, 12 dog, 15 person, 20 tvmonitor."""
    a = np.zeros((12, 16), np.uint8)
    a[2:6, 3:9] = 1
    a[1, 2:10] = 255  # void band above the plane
    b = np.zeros((10, 14), np.uint8)
    b[0:4, 0:4] = 15
    b[6:10, 10:14] = 20
    c = np.zeros((12, 16), np.uint8)
    d = np.full((12, 16), 255, np.uint8)
    d[4:8, 4:8] = 12
    return {"2008_000001": a, "2008_000002": b, "2008_000003": c, "2008_000004": d}


def write_voc(root: Path, *, seed: int = 0) -> dict:
    """VOC2012 layout with train = 1, 2 and val = 3, 4 (+ SBD masks for 1, 2, 5, 6)."""
    rng = np.random.default_rng(seed)
    masks = voc_masks()
    images = {}
    for image_id, mask in masks.items():
        images[image_id] = random_image(rng, *mask.shape)
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", images[image_id])
        write_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2008_000001\n2008_000002\n")
    (sets / "val.txt").write_text("2008_000003\n2008_000004\n")
    (sets / "trainval.txt").write_text("".join(f"{i}\n" for i in masks))
    # SBD: greyscale masks; image 1's differs from SegmentationClass so the tests can tell them apart.
    aug = {"2008_000001": np.full((12, 16), 3, np.uint8), "2008_000002": masks["2008_000002"],
           "2008_000003": masks["2008_000003"], "2008_000004": masks["2008_000004"],
           "2008_000005": np.full((8, 8), 7, np.uint8), "2008_000006": np.zeros((8, 8), np.uint8)}
    for image_id, mask in aug.items():
        write_png(root / "SegmentationClassAug" / f"{image_id}.png", mask, with_palette=False)
        if image_id not in images:
            images[image_id] = random_image(rng, *mask.shape)
            write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", images[image_id])
    return {"masks": masks, "aug_masks": aug, "images": images}


def write_voc_labelmap_set(root: Path, *, rgb_masks: bool = False) -> dict:
    """A user's own VOC-layout folder with labelmap.txt (background, cat, dog, bird)."""
    colours = {"background": (0, 0, 0), "cat": (10, 200, 30), "dog": (250, 50, 50), "bird": (0, 0, 255)}
    (root / "labelmap.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
        f"{name}:{','.join(map(str, c))}::\n" for name, c in colours.items()))
    masks = {}
    m = np.zeros((8, 10), np.uint8)
    m[0:3, 0:3] = 1
    m[5:8, 5:10] = 3
    masks["img_a"] = m
    m = np.zeros((8, 10), np.uint8)
    m[2:6, 2:6] = 2
    m[1, 1:7] = 255
    masks["img_b"] = m
    rng = np.random.default_rng(1)
    table = np.array(list(colours.values()) + [(0, 0, 0)] * 251 + [(224, 224, 192)], dtype=np.uint8)
    for image_id, mask in masks.items():
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", random_image(rng, *mask.shape))
        if rgb_masks:
            path = root / "SegmentationClass" / f"{image_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(table[mask]).save(path)
        else:
            write_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("img_a\nimg_b\n")
    return {"masks": masks, "class_names": ["cat", "dog", "bird"]}


# ------------------------------------------------------------------------------------------
# COCO
# ------------------------------------------------------------------------------------------
def rle_counts_fortran(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE: run lengths over the column-major pixels, starting with a 0-run."""
    flat = mask.astype(np.uint8).ravel(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return counts


def write_coco(root: Path, *, year: int = 2014, split: str = "val") -> dict:
    """Three images: 1 with a polygon dog, an RLE person, a compressed-RLE car and a crowd of people;
    2 without annotations; 3 with only a crowd. Category ids 1 person, 3 car, 18 dog → 1, 2, 3."""
    h, w = 12, 16
    rng = np.random.default_rng(2)
    prefix = f"COCO_{split}{year}_" if year == 2014 else ""
    files = {i: f"{prefix}{i:012d}.jpg" for i in (1, 2, 3)}
    for i, name in files.items():
        write_jpeg(root / f"{split}{year}" / name, random_image(rng, h, w))
    person = np.zeros((h, w), bool)
    person[0:3, 0:5] = True
    car = np.zeros((h, w), bool)
    car[8:12, 12:16] = True
    crowd = np.zeros((h, w), bool)
    crowd[0:6, 0:8] = True  # covers the person box and more
    car_rle = mask_utils.encode(np.asfortranarray(car.astype(np.uint8)))
    annotations = [
        # A big polygon dog, painted first; the small person lies inside it.
        {"id": 10, "image_id": 1, "category_id": 18, "iscrowd": 0, "area": 60.0,
         "segmentation": [[4.0, 2.0, 14.0, 2.0, 14.0, 8.0, 4.0, 8.0]], "bbox": [4, 2, 10, 6]},
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 15.0,
         "segmentation": {"size": [h, w], "counts": rle_counts_fortran(person)}, "bbox": [0, 0, 5, 3]},
        {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 16.0,
         "segmentation": {"size": [h, w], "counts": car_rle["counts"].decode()}, "bbox": [12, 8, 4, 4]},
        {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 48.0,
         "segmentation": {"size": [h, w], "counts": rle_counts_fortran(crowd)}, "bbox": [0, 0, 8, 6]},
        {"id": 14, "image_id": 3, "category_id": 3, "iscrowd": 1, "area": 48.0,
         "segmentation": {"size": [h, w], "counts": rle_counts_fortran(crowd)}, "bbox": [0, 0, 8, 6]},
    ]
    data = {
        "info": {"description": "kyam test fixture"},
        "images": [{"id": i, "file_name": name, "height": h, "width": w} for i, name in files.items()],
        "annotations": annotations,
        "categories": [{"id": 18, "name": "dog", "supercategory": "animal"},
                       {"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 3, "name": "car", "supercategory": "vehicle"}],
    }
    path = root / "annotations" / f"instances_{split}{year}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return {"json": path, "files": files, "person": person, "car": car, "crowd": crowd, "size": (h, w)}


# ------------------------------------------------------------------------------------------
# ADE20K
# ------------------------------------------------------------------------------------------
def write_ade20k(root: Path) -> dict:
    rng = np.random.default_rng(3)
    masks = {}
    m = np.zeros((10, 12), np.uint8)
    m[0:5] = 1        # wall
    m[5:10, 0:6] = 150  # flag
    masks[("training", "ADE_train_00000001")] = m
    m = np.full((10, 12), 3, np.uint8)  # sky only
    masks[("training", "ADE_train_00000002")] = m
    m = np.zeros((10, 12), np.uint8)   # all "other"
    masks[("validation", "ADE_val_00000001")] = m
    for (folder, stem), mask in masks.items():
        write_jpeg(root / "images" / folder / f"{stem}.jpg", random_image(rng, *mask.shape))
        write_png(root / "annotations" / folder / f"{stem}.png", mask, with_palette=False)
    return {"masks": masks}


# ------------------------------------------------------------------------------------------
# DFC2020
# ------------------------------------------------------------------------------------------
def dfc_codes_p1() -> np.ndarray:
    """16x16 DFC codes: forest left half with a 20-px urban block, water right half with a
    16-px savanna block (→ ignore). Valid 240 px: forest 108, urban 20 (< 10 %), water 112."""
    codes = np.zeros((16, 16), np.uint8)
    codes[:, :8] = 1
    codes[0:4, 0:5] = 7
    codes[:, 8:] = 10
    codes[12:16, 12:16] = 3
    return codes


def write_dfc2020(root: Path, *, planar: str = "separate", observations: bool = True) -> dict:
    """Test release p1, p5 (+ validation p0) with s1, s2, dfc and lc GeoTIFFs."""
    rng = np.random.default_rng(4)
    size = 16
    samples = {("test", 1): dfc_codes_p1(), ("test", 5): np.full((size, size), 8, np.uint8),
               ("validation", 0): np.full((size, size), 4, np.uint8)}
    lc = np.full((size, size), 12, np.uint8)  # IGBP croplands
    lc[:, :4] = 5                             # mixed forest
    lc[:, 4:6] = 9                            # savanna → ignore
    lc[0:2] = 17                              # water
    s2_by_sample, s1_by_sample = {}, {}
    for (release, pid), codes in samples.items():
        season = f"ROIs0000_{release}"
        folder = "0" if release == "test" else "validation"
        s2 = rng.integers(0, 4000, (13, size, size)).astype(np.uint16)
        s2[0, 0, 0] = 12000  # above the 10000 clip
        s1 = rng.uniform(-28, -2, (2, size, size)).astype(np.float32)
        s2_by_sample[(release, pid)], s1_by_sample[(release, pid)] = s2, s1
        for sensor, data in (("s2", s2), ("s1", s1), ("dfc", codes), ("lc", lc)):
            path = root / season / f"{sensor}_{folder}" / f"{season}_{sensor}_0_p{pid}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            if data.ndim == 3 and planar == "contiguous":
                tifffile.imwrite(path, data.transpose(1, 2, 0), photometric="minisblack", planarconfig="contig")
            elif data.ndim == 3:
                tifffile.imwrite(path, data, photometric="minisblack", planarconfig="separate")
            else:
                tifffile.imwrite(path, data, photometric="minisblack")
    if observations:
        (root / "test_observations.csv").write_text("Seasons.TESTSET,0,5\nSeasons.TESTSET,0,1\n")
        (root / "validation_observations.csv").write_text("Seasons.VALSET,0,0\n")
    return {"codes": samples, "lc": lc, "s2": s2_by_sample, "s1": s1_by_sample}


# ------------------------------------------------------------------------------------------
# EndoTect / HyperKvasir
# ------------------------------------------------------------------------------------------
ENDOTECT_IMAGES = {
    "lower-gi-tract/pathological-findings/polyps": ["p01", "p02", "p03"],
    "lower-gi-tract/anatomical-landmarks/cecum": ["c01", "c02"],
    "lower-gi-tract/quality-of-mucosal-views/bbps-2-3": ["q01", "q02"],
    "upper-gi-tract/anatomical-landmarks/z-line": ["z01", "z02"],
    "upper-gi-tract/pathological-findings/esophagitis-a": ["e01"],
}


def polyp_mask() -> np.ndarray:
    mask = np.zeros((24, 32), np.uint8)
    mask[6:18, 8:24] = 255
    return mask


def write_endotect(root: Path) -> dict:
    rng = np.random.default_rng(5)
    paths = {}
    for folder, stems in ENDOTECT_IMAGES.items():
        for stem in stems:
            path = root / "labeled-images" / folder / f"{stem}.jpg"
            write_jpeg(path, random_image(rng, 24, 32))
            paths[stem] = path
    for stem in ("p01", "p02"):
        write_jpeg(root / "segmented-images" / "images" / f"{stem}.jpg", random_image(rng, 24, 32))
        mask_path = root / "segmented-images" / "masks" / f"{stem}.jpg"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(polyp_mask()).convert("RGB").save(mask_path, format="JPEG", quality=90)
    return {"paths": paths}


def write_voc_protocol(root: Path) -> dict:
    """VOCdevkit/VOC2012 with odd-sized images (500x375 and 375x500, W x H), SBD's SegmentationClassAug and
    train_aug.txt; train = 2 images, val = 2, train_aug = the train images + 2 SBD-only ones, test = 2 without masks.

    Each image is a flat colour with one bright rectangle where its mask has the object (15 person or
    12 dog), and a void (255) band along the object's top edge, as VOC draws object borders.
    """
    voc = root / "VOCdevkit" / "VOC2012"
    sizes = {"2007_000001": (375, 500), "2007_000002": (500, 375), "2007_000003": (375, 500),
             "2007_000004": (500, 375), "2007_000005": (375, 500), "2007_000006": (500, 375),
             "2008_000007": (375, 500), "2008_000008": (500, 375)}  # id: (H, W)
    classes = {"2007_000001": 15, "2007_000002": 12, "2007_000003": 15, "2007_000004": 12,
               "2007_000005": 12, "2007_000006": 15}
    train, val, aug_only, test = list(sizes)[:2], list(sizes)[2:4], list(sizes)[4:6], list(sizes)[6:]
    masks = {}
    for number, (image_id, (height, width)) in enumerate(sizes.items()):
        image = np.full((height, width, 3), (40 + 20 * number, 90, 120), np.uint8)
        top, left = height // 4, width // 4 + 10 * number
        image[top:top + height // 2, left:left + width // 3] = (230, 220, 40)
        write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", image)
        if image_id in test:
            continue
        mask = np.zeros((height, width), np.uint8)
        mask[top:top + height // 2, left:left + width // 3] = classes[image_id]
        mask[top:top + 3, left:left + width // 3] = 255
        masks[image_id] = mask
        if image_id not in aug_only:
            write_png(voc / "SegmentationClass" / f"{image_id}.png", mask)
        if image_id not in val:  # SBD masks are greyscale index PNGs
            write_png(voc / "SegmentationClassAug" / f"{image_id}.png", mask, with_palette=False)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for name, ids in (("train", train), ("val", val), ("train_aug", train + aug_only), ("test", test),
                      ("trainval", train + val)):
        (sets / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return {"root": voc, "sizes": sizes, "masks": masks, "train": train, "val": val, "train_aug": train + aug_only,
            "test": test}
