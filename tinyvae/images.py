"""Image grids as PNG files, drawn with Pillow and written atomically."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .checkpoint import atomic_write_bytes


def save_grid(path, images, rows: int, cols: int, pad: int = 2) -> None:
    """Tile ``rows * cols`` grey images into one PNG.

    Args:
        path: output file, replaced atomically (a reader sees the old picture or the new one).
        images: ``(rows * cols, H, W)`` floats in [0, 1] (clipped), row-major order.
        pad: pixels of black border between tiles.

    Raises:
        ValueError: if the number of images is not ``rows * cols``.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3 or images.shape[0] != rows * cols:
        raise ValueError(f"expected {rows * cols} images of shape (H, W), got {images.shape}")
    n, h, w = images.shape
    canvas = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.uint8)
    tiles = np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = tiles[k]
    png = io.BytesIO()
    Image.fromarray(canvas, mode="L").save(png, format="PNG")
    atomic_write_bytes(path, png.getvalue())
