"""Image I/O and the upstream pixel conventions shared by every stage.

Load -> RGB -> ADM `center_crop_arr` -> uint8 HxWx3 (`load_image`, `load_images`); `to_tensor`
(`uint8_to_float`) maps uint8 to the [-1, 1] float the tokenizer and the classifier expect, `to_uint8`
maps decoder output back exactly as upstream saves samples, and `save_png` writes byte-reproducible
PNGs atomically.
"""
from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mdgen.errors import DataError, MissingFileError
from mdgen.io import atomic_path

if TYPE_CHECKING:  # torch is imported where it is used, so that `split` (crop_plan) does not pay for it
    import torch


def crop_plan(width: int, height: int, image_size: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """The sizes `center_crop_arr` takes a width x height image through: each BOX halving, then the BICUBIC resize.

    The centre image_size square of the last size is what is kept (`split` reports what that drops).
    """
    halvings, size = [], (width, height)
    while min(size) >= 2 * image_size:
        size = (size[0] // 2, size[1] // 2)
        halvings.append(size)
    scale = image_size / min(size)
    return halvings, (round(size[0] * scale), round(size[1] * scale))


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """Resize so the short side is `image_size`, then take the centre square; uint8 HxWxC.

    Ported from ADM, openai/guided-diffusion@8fb3ad9 guided_diffusion/image_datasets.py#L126
    (`center_crop_arr`), which DiT and LightningDiT (extract_features.py, datasets) use unchanged:
    BOX-halve while the short side is >= 2*image_size (cheap anti-aliasing), then one BICUBIC
    resize with each side rounded, then crop with the floor of the margin (odd margins lose the
    extra pixel at the bottom/right). An image already image_size square passes through unchanged.
    """
    halvings, final = crop_plan(*pil_image.size, image_size)
    for size in halvings:
        pil_image = pil_image.resize(size, resample=Image.BOX)
    pil_image = pil_image.resize(final, resample=Image.BICUBIC)
    arr = np.array(pil_image)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top:top + image_size, left:left + image_size]


def load_image(path: str | Path, image_size: int = 256) -> np.ndarray:
    """Read any PIL-readable image as uint8 (image_size, image_size, 3) RGB.

    Converted to RGB first, like upstream's ImageFolder loader (RGBA drops alpha rather than
    compositing; L/P/CMYK expand), then `center_crop_arr`. Unreadable files raise a DataError naming them.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated data fails here with the file name attached
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: expected a png/jpg/jpeg/bmp file PIL can decode ({e})") from e
    return center_crop_arr(rgb, image_size)


def load_images(files: list[str | Path], image_size: int) -> np.ndarray:
    """uint8 (N, image_size, image_size, 3) from image files, each through `load_image`.

    The whole set stays in memory as bytes (2000 images of 256 px = 0.4 GB); no files give N = 0.
    """
    if not files:
        return np.zeros((0, image_size, image_size, 3), np.uint8)
    return np.stack([load_image(f, image_size) for f in files])


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 tensor of any shape (e.g. N,3,H,W) -> float32 in [-1, 1], memory layout kept.

    x/127.5 - 1 equals upstream ToTensor (x/255) + Normalize(0.5, 0.5) bit for bit for all 256 values.
    """
    import torch

    assert images.dtype == torch.uint8, f"expected uint8 images, got {images.dtype}"
    return images.float() / 127.5 - 1.0


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N,H,W,3) or (H,W,3) -> float32 (N,3,H,W) in [-1, 1] (`uint8_to_float` of the channels-first view)."""
    import torch

    images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    assert images.dtype == torch.uint8, f"to_tensor expects uint8 images, got {images.dtype}"
    if images.ndim == 3:
        images = images[None]
    assert images.ndim == 4 and images.shape[-1] == 3, \
        f"to_tensor expects (N,H,W,3) or (H,W,3), got {tuple(images.shape)}"
    return uint8_to_float(images.permute(0, 3, 1, 2))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N,3,H,W) in ~[-1, 1] -> uint8 (N,H,W,3), as upstream saves decoded samples.

    Upstream computes clamp(127.5*x + 128, 0, 255) and casts with truncation. The +128 (not the
    +127.5 that inverts to_tensor) is what makes the truncating cast round to nearest: floor(y + 0.5)
    of y = 127.5*(x+1). So to_uint8(to_tensor(u)) == u, and the x = -1 edge maps to 0 after truncation.
    """
    assert images.ndim == 4, f"to_uint8 expects (N,C,H,W), got {tuple(images.shape)}"
    import torch

    out = torch.clamp(127.5 * images.detach().float() + 128.0, 0, 255)
    return out.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write uint8 (H,W,3) as PNG, atomically; no metadata, fixed settings, so equal pixels give equal bytes."""
    image = np.asarray(image)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, \
        f"save_png expects uint8 (H,W,3), got {image.dtype} {image.shape}"
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=6, optimize=False)
