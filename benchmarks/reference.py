"""Straightforward reference implementations, used to check and to benchmark the fast ones."""
from __future__ import annotations

import numpy as np

__all__ = ["nearest_label_fill_bfs"]


def nearest_label_fill_bfs(labels: np.ndarray) -> np.ndarray:
    """Fill unassigned pixels (-1) with the label of the Euclidean-nearest assigned pixel, pixel by pixel.

    For each unassigned pixel the search widens breadth-first, one square ring (Chebyshev radius r)
    at a time, keeping the closest assigned pixel seen; it stops once r² exceeds the best squared
    distance, since no pixel at radius r or beyond can be closer. Equidistant candidates are
    resolved by the smallest (row, column). A multi-source 4-neighbour flood would be shorter but
    finds the Manhattan-nearest label, which is not the same answer.

    (H, W) integer array in, same shape out. Raises if no pixel is assigned.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels: expected an (H, W) array, got shape {labels.shape}")
    assigned = labels >= 0
    if not assigned.any():
        raise ValueError("labels: no assigned pixel to fill from")
    height, width = labels.shape
    filled = labels.copy()
    for row in range(height):
        for col in range(width):
            if assigned[row, col]:
                continue
            best = None  # (squared distance, row, col)
            radius = 1
            while best is None or radius * radius <= best[0]:
                top, bottom, left, right = row - radius, row + radius, col - radius, col + radius
                if top < 0 and left < 0 and bottom >= height and right >= width:
                    break  # the ring lies wholly outside the image, and so will every larger one
                for r in range(max(top, 0), min(bottom, height - 1) + 1):
                    on_edge_row = r in (top, bottom)
                    step = 1 if on_edge_row else right - left
                    for c in range(left, right + 1, step):
                        if 0 <= c < width and assigned[r, c]:
                            candidate = ((r - row) ** 2 + (c - col) ** 2, r, c)
                            if best is None or candidate < best:
                                best = candidate
                radius += 1
            filled[row, col] = labels[best[1], best[2]]
    return filled
