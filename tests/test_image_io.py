"""read_image / read_image_size on the image kinds real data sets contain."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from dsod.data import image_io
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


@pytest.mark.parametrize("channels", [1, 3])
def test_12bit_data_in_a_16bit_png_is_scaled_by_its_range_not_left_dark(tmp_path, channels):
    deep = np.linspace(0, 4095, 12 * 20 * channels).reshape(12, 20, channels).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "d12.png"), deep.squeeze())
    out = read_image(tmp_path / "d12.png")
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    assert out.max() == 255  # >> 8 would give at most 15
    assert np.abs(out[..., :channels].astype(int) - (deep >> 4)).max() <= 1


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
def test_annotation_drawn_on_stored_pixels_keeps_them(tmp_path, orientation, monkeypatch):
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
    decodes = []
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decodes.append(a[1]) or real_imdecode(*a))
    out = read_image(path, annotated_size=(24, 16))
    assert len(decodes) == 1  # decoded once, in the right frame
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


@pytest.mark.parametrize(
    "content,reason",
    [(None, "does not exist"), (b"", "empty"), (b"this is not an image at all", "decode")],
)
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


def _png_header_only(width: int, height: int) -> bytes:
    """A 60-byte PNG that claims ``width`` x ``height`` RGB pixels (its IDAT holds little)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose start-of-frame header is patched to claim ``width`` x ``height``."""
    data = bytearray(cv2.imencode(".jpg", _pattern(16, 16))[1].tobytes())
    sof = data.index(b"\xff\xc0")  # baseline SOF0: marker, length(2), precision(1), H, W
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    "name,side", [("bomb.png", 30000), ("bighdr.jpg", 30000), ("huge.jpg", 65000)]
)
def test_huge_header_is_refused_unread_naming_file_and_size(tmp_path, name, side):
    path = tmp_path / name
    path.write_bytes(
        _png_header_only(side, side) if name.endswith(".png") else _jpeg_claiming(side, side)
    )
    assert path.stat().st_size < 1000
    for read in (read_image, read_image_size):
        with pytest.raises(ImageReadError) as info:
            read(path)
        assert info.value.path == str(path)
        assert f"{side}x{side} pixels" in str(info.value) and "89.5 megapixels" in str(info.value)


def test_pixel_limit_is_inclusive(tmp_path, monkeypatch):
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 20 * 12)
    cv2.imwrite(str(tmp_path / "fits.png"), _pattern(12, 20))
    cv2.imwrite(str(tmp_path / "over.png"), _pattern(13, 20))
    assert read_image(tmp_path / "fits.png").shape == (12, 20, 3)
    assert read_image_size(tmp_path / "fits.png") == (20, 12)
    for read in (read_image, read_image_size):
        with pytest.raises(ImageReadError, match="20x13 pixels"):
            read(tmp_path / "over.png")


def test_opencv_error_becomes_image_read_error(tmp_path, monkeypatch):
    # Above OpenCV's own limit (2**30 pixels) imdecode raises cv2.error; with this module's
    # limit lifted, that error must still come back as an ImageReadError naming the file.
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 10**12)
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(65000, 65000))
    with pytest.raises(ImageReadError, match="CV_IO_MAX_IMAGE_PIXELS") as info:
        read_image(path)
    assert info.value.path == str(path) and "\n" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
@pytest.mark.parametrize("read", [read_image, read_image_size])
def test_named_pipe_is_refused_without_blocking(tmp_path, read):
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)  # opening it to read waits for a writer: forever, in a data set
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            read(path)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome.append(error)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # unblock the reader, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a named pipe blocked")
    assert len(outcome) == 1 and isinstance(outcome[0], ImageReadError)
    assert outcome[0].path == str(path) and "not a regular file" in str(outcome[0])


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_link_to_a_device_is_refused(tmp_path):
    path = tmp_path / "null.jpg"
    path.symlink_to("/dev/null")  # like /dev/zero, which would never end
    for read in (read_image, read_image_size):
        with pytest.raises(ImageReadError, match="not a regular file: it is a device"):
            read(path)


def test_text_file_named_jpg_gets_a_clean_message(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("version https://git-lfs.github.com/spec/v1\n")
    for read in (read_image, read_image_size):
        with pytest.raises(ImageReadError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"cannot read image {path}: ")
        assert "BytesIO" not in message and " at 0x" not in message
        assert "b'version https://'" in message  # the first bytes tell what the file is


def test_jpeg_with_broken_header_gets_a_clean_message(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError, match="broken JPEG") as info:
        read_image(path)
    assert "BytesIO" not in str(info.value)


def test_a_square_annotation_keeps_the_exif_rotation(tmp_path):
    # 16x16 stored, orientation 6: both frames are 16x16, nothing tells them apart.
    rgb = _pattern(16, 16)[..., ::-1].copy()
    rgb[:4, :6] = (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "square.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=98)
    assert np.array_equal(read_image(path, annotated_size=(16, 16)), read_image(path))


def test_the_pixel_limit_comes_from_the_environment():
    code = "from dsod.data import image_io; print(image_io.MAX_IMAGE_PIXELS)"
    env = {**os.environ, "DSOD_MAX_IMAGE_PIXELS": "2e8"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "200000000"
