"""IEEE GRSS DFC2020 (SEN12MS-based): 13-band Sentinel-2 (+ 2-band Sentinel-1) patches, 8 classes.

Labels: the high-resolution ``dfc`` GeoTIFFs hold the 10 DFC codes (1 Forest, 2 Shrubland,
3 Savanna, 4 Grassland, 5 Wetlands, 6 Croplands, 7 Urban/Built-up, 8 Snow/Ice, 9 Barren,
10 Water); the ``lc`` GeoTIFFs hold the 17 IGBP codes, first mapped to DFC codes. Savanna,
Snow/Ice and 0 (no label) become 255; the other 8 codes become classes 0..7. There is no
background. An image label is present when its class covers >= 10 % of the valid pixels.

Protocol: train on the "test" release (5,128 patches) and score on "validation" (986), so
split "train" means the test release and "val" the validation release.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import tifffile

from .base import DatasetError, DatasetNotFoundError, KyamDataset, find_root
from .transforms import S1_CLIP_DB, S2_SCALE, normalization, s2_true_colour

__all__ = ["DFC2020_CLASSES", "DFC2020_LAYOUT", "DFC_TO_CLASS", "IGBP_TO_DFC", "DFC2020Dataset", "read_tif",
           "resolve_dfc2020_root"]

DFC2020_CLASSES = ("forest", "shrubland", "grassland", "wetland", "cropland", "urban", "barren", "water")
# DFC code (index) → class index; 255 = ignore. Codes above 10 other than 255 are invalid (-1).
DFC_TO_CLASS = np.full(256, -1, dtype=np.int64)
DFC_TO_CLASS[[0, 3, 8, 255]] = 255
DFC_TO_CLASS[[1, 2, 4, 5, 6, 7, 9, 10]] = np.arange(8)
# IGBP code (index) → DFC code, the simplified scheme of the contest.
IGBP_TO_DFC = np.array([0, 1, 1, 1, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 6, 8, 9, 10], dtype=np.int64)

DFC2020_LAYOUT = """\
  <root>/
    ROIs0000_test/s2_0/ROIs0000_test_s2_0_p<ID>.tif           13 bands, uint16 DN (reflectance x 10000)
    ROIs0000_test/s1_0/ROIs0000_test_s1_0_p<ID>.tif           2 bands VV, VH in dB (use_s1=True)
    ROIs0000_test/dfc_0/ROIs0000_test_dfc_0_p<ID>.tif         1 band DFC codes (lc_0/: IGBP codes)
    ROIs0000_validation/{s2,s1,dfc}_validation/ROIs0000_validation_{s2,s1,dfc}_0_p<ID>.tif
    test_observations.csv, validation_observations.csv        optional rows: Season,Scene,ID
"""
_CANDIDATES = ("", "dfc2020", "DFC2020", "dfc")
_RELEASES = {"train": "test", "test": "test", "val": "validation", "validation": "validation"}
_S2_NAME = re.compile(r"^(?P<season>ROIs\d+_[A-Za-z]+)_s2_(?P<scene>[^_]+)_p(?P<id>\d+)\.tif$")


def resolve_dfc2020_root(root: str | Path) -> Path:
    """The DFC2020 folder at or below `root` (see `DFC2020_LAYOUT`)."""
    root = Path(root)
    for markers in (("ROIs0000_test",), ("ROIs0000_validation",)):
        try:
            return find_root(root, _CANDIDATES, markers, dataset="dfc2020", layout=DFC2020_LAYOUT)
        except DatasetNotFoundError as err:
            error = err
    raise error


def read_tif(path: Path, *, bands: int | None = None) -> np.ndarray:
    """A GeoTIFF → (H, W, C) array, whatever its band interleave; checks the band count."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: GeoTIFF not found")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data, axes = series.asarray(), series.axes
    except Exception as err:  # tifffile raises TiffFileError, ValueError, struct.error, ...
        raise DatasetError(f"{path}: corrupt or truncated GeoTIFF ({type(err).__name__}: {err})") from err
    if data.ndim == 2:
        data = data[..., None]
    elif data.ndim == 3 and not axes.endswith("S"):
        data = data.transpose(1, 2, 0)  # band-sequential (separate planes or one page per band)
    elif data.ndim != 3:
        raise DatasetError(f"{path}: expected a (bands, H, W) raster, got shape {data.shape} ({axes})")
    if bands is not None and data.shape[2] != bands:
        raise DatasetError(f"{path}: wrong band count: {data.shape[2]} bands, expected {bands}")
    return data


class DFC2020Dataset(KyamDataset):
    """DFC2020; `split` "train"/"test" (the test release) or "val"/"validation".

    use_s1 adds Sentinel-1 VV, VH after the 13 S2 bands (15 channels). label_source "dfc"
    reads the DFC codes, "lc" the IGBP codes.
    """

    name = "dfc2020"

    def __init__(self, root: str | Path, split: str = "train", *, use_s1: bool = False,
                 label_source: Literal["dfc", "lc"] = "dfc", min_label_fraction: float = 0.1,
                 image_size: int | tuple[int, int] | None = None, augment: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        root = resolve_dfc2020_root(root)
        if split not in _RELEASES:
            raise ValueError(f"dfc2020: split must be one of {sorted(_RELEASES)}, got {split!r}")
        if label_source not in ("dfc", "lc"):
            raise ValueError(f"dfc2020: label_source must be 'dfc' or 'lc', got {label_source!r}")
        self.release = _RELEASES[split]
        self.use_s1 = use_s1
        self.label_source = label_source
        self._season = f"ROIs0000_{self.release}"
        self._samples = self._list_samples(root)
        default_mean, default_std = normalization("s2s1" if use_s1 else "s2")
        super().__init__(
            root=root, split=split, ids=[f"{self._season}_s2_{scene}_p{pid}" for scene, pid in self._samples],
            class_names=DFC2020_CLASSES, has_background=False, num_channels=15 if use_s1 else 13,
            multi_label=True, image_size=image_size, augment=augment, mean=mean or default_mean,
            std=std or default_std, label_min_fraction=min_label_fraction)

    def _list_samples(self, root: Path) -> list[tuple[str, int]]:
        """(scene, patch id) pairs from the observation CSV, else from the s2 file names."""
        season_dir = root / self._season
        if not season_dir.is_dir():
            raise DatasetNotFoundError(f"{season_dir}: release folder not found; expected layout:\n{DFC2020_LAYOUT}")
        observations = root / f"{self.release}_observations.csv"
        samples = []
        if observations.is_file():
            with open(observations, newline="") as handle:
                for number, row in enumerate(csv.reader(handle), start=1):
                    if not row or (number == 1 and not row[-1].strip().isdigit()):
                        continue  # blank line or a header
                    if len(row) < 3 or not row[2].strip().isdigit():
                        raise DatasetError(f"{observations}:{number}: expected 'Season,Scene,ID', got {row}")
                    samples.append((row[1].strip(), int(row[2])))
            if not samples:
                raise DatasetError(f"{observations}: observation file is empty")
            return samples
        for folder in sorted(season_dir.glob("s2_*")):
            for path in folder.glob("*.tif"):
                match = _S2_NAME.match(path.name)
                if match:
                    samples.append((match["scene"], int(match["id"])))
        if not samples:
            raise DatasetError(f"{season_dir}: no Sentinel-2 patches found; expected layout:\n{DFC2020_LAYOUT}")
        return sorted(samples, key=lambda s: (s[0], s[1]))

    def _path(self, index: int, sensor: str) -> Path:
        scene, pid = self._samples[index]
        season_dir = self.root / self._season
        folder = season_dir / f"{sensor}_{scene}"
        if not folder.is_dir():
            folder = season_dir / f"{sensor}_{self.release}"  # the validation release's folder names
        return folder / f"{self._season}_{sensor}_{scene}_p{pid}.tif"

    def _image_path(self, index: int) -> Path:
        return self._path(index, "s2")

    def _mask_path(self, index: int) -> Path:
        return self._path(index, self.label_source)

    def _read_image(self, index: int) -> np.ndarray:
        s2 = read_tif(self._path(index, "s2"), bands=13).astype(np.float32)
        image = np.clip(s2, 0, S2_SCALE) / S2_SCALE
        if self.use_s1:
            path = self._path(index, "s1")
            s1 = np.nan_to_num(read_tif(path, bands=2).astype(np.float32), nan=S1_CLIP_DB[0])
            if s1.shape[:2] != image.shape[:2]:
                raise DatasetError(f"{path}: Sentinel-1 size {s1.shape[1]}x{s1.shape[0]} differs from the "
                                   f"Sentinel-2 size {image.shape[1]}x{image.shape[0]}")
            image = np.concatenate([image, np.clip(s1, *S1_CLIP_DB)], axis=2)
        return image

    def _read_mask(self, index: int) -> np.ndarray:
        path = self._mask_path(index)
        codes = read_tif(path, bands=1)[..., 0].astype(np.int64)
        limit = 17 if self.label_source == "lc" else 10
        bad = (codes < 0) | ((codes > limit) & (codes != 255))
        if bad.any():
            values = sorted(int(v) for v in np.unique(codes[bad]))[:10]
            raise DatasetError(f"{path}: label value(s) {values} outside the class list "
                               f"({'IGBP 0..17' if self.label_source == 'lc' else 'DFC 0..10'} and 255)")
        if self.label_source == "lc":
            codes = np.where(codes == 255, 255, IGBP_TO_DFC[np.minimum(codes, 17)])
        return DFC_TO_CLASS[codes]

    def _display(self, image: np.ndarray) -> np.ndarray:
        return s2_true_colour(image)
