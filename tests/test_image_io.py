"""read_image / read_image_size on the image kinds real data sets contain."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from dsod.data.errors import DataError, ImageReadError
from dsod.data.image_io import read_image, read_image_size


def _pattern(height: int = 12, width: int = 20) -> np.ndarray:
    """A BGR uint8 image with distinct, asymmetric colours."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.arange(width, dtype=np.uint8)[None, :] * 10
    image[..., 1] = np.arange(height, dtype=np.uint8)[:, None] * 15
    image[..., 2] = 200
    return image


def test_color_png_roundtrip(tmp_path):
    bgr = _pattern()
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    np.testing.assert_array_equal(out, bgr)
    assert read_image_size(tmp_path / "a.png") == (20, 12)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _pattern()[..., 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (12, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_drops_alpha_keeps_colour(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[...] = (10, 20, 30, 0)  # fully transparent: the stored colour must survive
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (5, 6, 3)
    assert out[0, 0].tolist() == [30, 20, 10]  # BGR


def test_palette_png(tmp_path):
    image = Image.new("P", (7, 5))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pixels = image.load()
    pixels[0, 0], pixels[1, 0], pixels[2, 0] = 0, 1, 2
    image.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (5, 7, 3)
    assert out[0, 0].tolist() == [0, 0, 255]  # red in BGR
    assert out[0, 1].tolist() == [0, 255, 0]
    assert out[0, 2].tolist() == [255, 0, 0]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_scaled_to_8bit(tmp_path, suffix):
    deep = (np.arange(12 * 20 * 3).reshape(12, 20, 3) * 97 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / f"d{suffix}"), deep)
    out = read_image(tmp_path / f"d{suffix}")
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    assert np.abs(out.astype(int) - (deep >> 8)).max() <= 1


def test_16bit_grayscale_png(tmp_path):
    deep = np.linspace(0, 65535, 12 * 20).reshape(12, 20).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), deep)
    out = read_image(tmp_path / "g16.png")
    assert out.shape == (12, 20, 3)
    assert np.abs(out[..., 1].astype(int) - (deep >> 8)).max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    rgb = _pattern(16, 24)[..., ::-1].copy()
    rgb[:4, :6] = (255, 255, 255)  # a marked corner makes every orientation distinct
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=98)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))[..., ::-1]
    out = read_image(path)
    transposed = orientation in (5, 6, 7, 8)
    assert out.shape == ((24, 16, 3) if transposed else (16, 24, 3))
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 3
    assert read_image_size(path) == (out.shape[1], out.shape[0])


@pytest.mark.parametrize("orientation", [3, 6])
def test_annotation_drawn_on_stored_pixels_keeps_them(tmp_path, orientation):
    # Orientation 6 turns the 24x16 stored picture to 16x24. An annotation that says 24x16
    # was drawn on the stored pixels: those come back, unturned. Orientation 3 (180 degrees)
    # keeps the size, so nothing tells the frames apart: EXIF applies as always.
    rgb = _pattern(16, 24)[..., ::-1].copy()
    rgb[:4, :6] = (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=98)
    stored = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    out = read_image(path, annotated_size=(24, 16))
    if orientation == 6:
        assert out.shape == (16, 24, 3) and np.array_equal(out, stored)
        assert read_image(path, annotated_size=(16, 24)).shape == (24, 16, 3)  # the EXIF frame
    else:
        assert np.array_equal(out, read_image(path)) and not np.array_equal(out, stored)


def test_non_ascii_path(tmp_path):
    path = tmp_path / "bild_äöü_画像.jpg"
    cv2.imencode(".jpg", _pattern())[1].tofile(str(path))
    assert read_image(path).shape == (12, 20, 3)
    assert read_image_size(path) == (20, 12)


def _jpeg_bytes() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", noise)[1].tobytes()


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg_raises_naming_file(tmp_path, keep):
    data = _jpeg_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageReadError, match="cut.jpg") as info:
        read_image(path)
    assert "truncated" in str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)


def test_jpeg_missing_only_its_eoi_marker_raises(tmp_path):
    path = tmp_path / "noeoi.jpg"
    path.write_bytes(_jpeg_bytes()[:-2])
    with pytest.raises(ImageReadError, match="noeoi.jpg"):
        read_image(path)


def test_jpeg_with_appended_data_is_fine(tmp_path):
    path = tmp_path / "extra.jpg"
    path.write_bytes(_jpeg_bytes() + b"appended by a camera" * 10)
    assert read_image(path).shape == (64, 64, 3)


def test_truncated_png_raises(tmp_path):
    ok, encoded = cv2.imencode(".png", _pattern())
    path = tmp_path / "cut.png"
    path.write_bytes(encoded.tobytes()[:-12])  # without the IEND chunk
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(path)


@pytest.mark.parametrize("content,reason", [(None, "does not exist"), (b"", "empty"),
                                            (b"this is not an image at all", "decode")])
def test_bad_files_raise_naming_file(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    with pytest.raises(ImageReadError):
        read_image_size(path)


def test_image_read_error_survives_pickle_and_one_argument_rebuild():
    error = ImageReadError("/x/y.jpg", "the file is empty (0 bytes)")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ImageReadError and again.path == "/x/y.jpg"
    assert str(again) == str(error)
    assert str(ImageReadError(str(error))) == str(error)  # how DataLoader re-raises
