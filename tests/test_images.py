"""mdgen.images: loading whatever a user folder holds, ADM centre crop, pixel conventions, PNG writing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mdgen.images import center_crop_arr, load_image, load_images, save_png, to_tensor, to_uint8, uint8_to_float


def gradient(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK", "LA", "1", "I;16"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    path = tmp_path / ("img.tiff" if mode in ("CMYK", "I;16") else "img.png")
    Image.fromarray(gradient(256, 256)).convert(mode).save(path)
    arr = load_image(path)
    assert arr.shape == (256, 256, 3) and arr.dtype == np.uint8


def test_rgba_drops_alpha_and_gray_expands(tmp_path):
    rgb = gradient(256, 256)
    rgba = np.concatenate([rgb, np.full((256, 256, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)  # as upstream's convert("RGB")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.bmp")
    np.testing.assert_array_equal(load_image(tmp_path / "g.bmp"), np.repeat(rgb[..., :1], 3, axis=-1))


def test_palette_maps_to_its_colours(tmp_path):
    im = Image.new("P", (256, 256))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (0, 0, 128, 256))
    im.save(tmp_path / "p.png")
    arr = load_image(tmp_path / "p.png")
    assert arr[0, 0].tolist() == [0, 0, 255] and arr[0, 255].tolist() == [255, 0, 0]


def test_256_square_passes_through(tmp_path):
    rgb = gradient(256, 256)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    np.testing.assert_array_equal(load_image(tmp_path / "x.png"), rgb)


def test_center_crop_arr_numbers():
    # odd margin: 257 wide -> no resize (scale 1), crop offset (257-256)//2 = 0 drops the last column
    src = gradient(257, 256)
    np.testing.assert_array_equal(center_crop_arr(Image.fromarray(src), 256), src[:, :256])
    # 512x512: one BOX halving reaches 256 exactly, bicubic is then the identity
    src = gradient(512, 512)
    np.testing.assert_array_equal(center_crop_arr(Image.fromarray(src), 256),
                                  np.array(Image.fromarray(src).resize((256, 256), Image.BOX)))
    # 1030x520: BOX to 515x260 (520 >= 512), bicubic to round(515*256/260)=507 x 256, crop x from (507-256)//2=125
    src = Image.fromarray(gradient(1030, 520))
    expected = np.array(src.resize((515, 260), Image.BOX).resize((507, 256), Image.BICUBIC))[:, 125:381]
    out = center_crop_arr(src, 256)
    assert out.shape == (256, 256, 3)
    np.testing.assert_array_equal(out, expected)
    # portrait, upsampling: 100x300 -> 256x768, crop y from (768-256)//2 = 256
    src = Image.fromarray(gradient(100, 300))
    np.testing.assert_array_equal(center_crop_arr(src, 256),
                                  np.array(src.resize((256, 768), Image.BICUBIC))[256:512])


def test_other_size_is_resized(tmp_path):
    Image.fromarray(gradient(640, 480)).save(tmp_path / "big.jpg")
    assert load_image(tmp_path / "big.jpg").shape == (256, 256, 3)
    assert load_image(tmp_path / "big.jpg", image_size=64).shape == (64, 64, 3)


def test_corrupt_file_error_names_file(tmp_path):
    bad = tmp_path / "ID_3" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"ID_3/broken\.jpg.*expected a png/jpg/jpeg/bmp"):
        load_image(bad)
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(full)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"truncated\.png"):
        load_image(truncated)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png")


def test_to_tensor_matches_totensor_normalize():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=-1)
    x = to_tensor(values)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    upstream = (torch.from_numpy(values).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.equal(x[0], upstream)
    assert x.min() == -1 and x.max() == 1
    assert to_tensor(np.stack([values, values])).shape == (2, 3, 16, 16)


def test_to_uint8_quirk():
    # +128 with a truncating cast rounds to nearest: 0.0 -> 128 (not 127), and inverts to_tensor exactly
    # i.e. 127.5 * (x + 1) rounded to nearest: 127.6 -> 128, 127.4 -> 127, out of range clamped
    ideal = torch.tensor([-50.0, 0.0, 127.5, 255.0, 300.0, 127.6, 127.4, 0.4, 254.6])
    x = (ideal / 127.5 - 1).reshape(1, 1, 1, -1).expand(1, 3, 1, -1)
    out = to_uint8(x)
    assert out.shape == (1, 1, 9, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 128, 127, 0, 255]
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    np.testing.assert_array_equal(to_uint8(to_tensor(values)), values)


def test_save_png_deterministic_and_atomic(tmp_path):
    rgb = gradient(256, 128)
    a, b = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    save_png(a, rgb)
    save_png(b, rgb)
    assert a.read_bytes() == b.read_bytes()
    assert b"tEXt" not in a.read_bytes() and b"tIME" not in a.read_bytes()
    np.testing.assert_array_equal(np.array(Image.open(a)), rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "sub"]
    with pytest.raises(AssertionError):
        save_png(tmp_path / "c.png", rgb.astype(np.float32))
    assert not (tmp_path / "c.png").exists()


def test_uint8_to_float_keeps_layout_and_matches_to_tensor():
    nhwc = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).repeat(2, 1, 1, 3)
    channels_last = nhwc.permute(0, 3, 1, 2)  # an (N, 3, H, W) view of (N, H, W, 3) memory
    x = uint8_to_float(channels_last)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 16, 16) and x.stride() == channels_last.stride()
    assert x.min() == -1.0 and x.max() == 1.0 and x[0, 0, 0, 1] == 1 / 127.5 - 1.0
    # to_tensor is uint8_to_float of that view: same values, same memory layout
    y = to_tensor(nhwc.numpy())
    assert torch.equal(y, x) and y.stride() == x.stride()
    with pytest.raises(AssertionError, match="uint8"):
        uint8_to_float(x)


def test_load_images_stacks_load_image(tmp_path):
    files = []
    for i, size in enumerate((64, 80)):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(gradient(size, 64)).save(files[-1])
    x = load_images(files, 32)
    assert x.dtype == np.uint8 and x.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(x[1], load_image(files[1], 32))
    assert load_images([], 32).shape == (0, 32, 32, 3)
