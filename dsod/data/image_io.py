"""Reading image files robustly into uint8 BGR arrays.

:func:`read_image` decodes with OpenCV (``np.fromfile`` + ``cv2.imdecode``, so non-ASCII
paths work) using ``IMREAD_COLOR``, which

* turns grayscale, grayscale + alpha, palette and 1-bit images into 3 channels,
* drops an alpha channel (no compositing: the stored colour is kept),
* applies the EXIF orientation tag (JPEG, PNG, TIFF and WebP were checked against Pillow's
  ``ImageOps.exif_transpose`` with OpenCV 5.0),

and ``IMREAD_ANYDEPTH``, which keeps deep data as it is stored: 16-bit PNG and TIFF are
scaled to 8 bit by the depth their values use (:func:`_to_uint8`: data that reach 4095
are 12-bit, shifted right by 4, not by 8, which would leave a 12-bit camera's picture
nearly black), float TIFF in [0, 1] by 255. Pillow decodes what OpenCV cannot.

libjpeg and libpng may decode a cut-off file partially, with only a warning on stderr. So
before decoding, a JPEG must end with the end-of-image marker ``FFD9`` and a PNG with its
``IEND`` chunk; a JPEG with other bytes after its end (some cameras append data) is fully
decoded by Pillow to tell appended data from truncation.

A few kilobytes can claim a huge size in their header (a "decompression bomb": a 30000x30000
PNG of one colour decodes to 2.7 GB). Before decoding, the size is read from the header (with
Pillow, for every format it knows) and an image of more than :data:`MAX_IMAGE_PIXELS` pixels
is refused. Only regular files are read: a named pipe or a device (``/dev/zero``) named like
an image would block or never end.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from dsod.data.errors import ImageReadError

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_TRAILING_PADDING = b"\x00\r\n \t"
# EXIF orientations 5..8 turn the picture by 90 degrees: width and height swap.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def _pixel_limit() -> int:
    value = os.environ.get("DSOD_MAX_IMAGE_PIXELS", "")
    try:
        return int(float(value)) if value else 1024 * 1024 * 1024 // 4 // 3
    except ValueError:
        raise ValueError(f"DSOD_MAX_IMAGE_PIXELS={value!r} is not a number of pixels") from None


# The most pixels an image may have: Pillow's default MAX_IMAGE_PIXELS (2**30 / 4 / 3, about
# 89.5 megapixels, 9459x9459; 268 MB as uint8 BGR) unless the environment variable
# DSOD_MAX_IMAGE_PIXELS says otherwise (set it before starting: loader workers read it too).
# Larger headers are refused unread.
MAX_IMAGE_PIXELS: int = _pixel_limit()


def _check_regular_file(path: Path) -> None:
    """Raise ImageReadError unless ``path`` is (a link to) an existing regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageReadError(path, "the file does not exist") from None
    except OSError as error:  # e.g. a loop of symbolic links, no permission
        raise ImageReadError(path, error.strerror or str(error)) from None
    if stat.S_ISDIR(mode):
        raise ImageReadError(path, "it is a directory, not a file")
    if not stat.S_ISREG(mode):
        what = (
            "a named pipe (FIFO)"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
        )
        raise ImageReadError(path, f"not a regular file: it is {what}")


def _read_bytes(path: Path) -> np.ndarray:
    """The file's bytes as a uint8 ``[n]`` array; ImageReadError if missing, empty or not
    a regular file."""
    _check_regular_file(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "the file does not exist") from None
    except IsADirectoryError:
        raise ImageReadError(path, "it is a directory, not a file") from None
    except OSError as error:
        raise ImageReadError(path, error.strerror or str(error)) from None
    if data.size == 0:
        raise ImageReadError(path, "the file is empty (0 bytes)")
    return data


_COMMON_FORMATS = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))


def _open_header(fp: BinaryIO) -> ImageFile.ImageFile | None:
    """What ``Image.open(fp)`` returns (only the header read), without Pillow's own
    decompression-bomb check, so that the size of a huge image can be reported; None when no
    Pillow plugin knows the format. Plugins are tried in Pillow's order, as ``Image.open``
    does; a broken header raises what the plugin raises."""
    Image.init()
    prefix = fp.read(16)
    for magic, name in _COMMON_FORMATS:  # the usual formats first: no other plugin is tried
        if prefix.startswith(magic) and name in Image.OPEN:
            fp.seek(0)
            try:
                return Image.OPEN[name][0](fp, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                break
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        known = accept is None or accept(prefix)
        if not known or isinstance(known, str):  # a str explains why it is not this format
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):  # not this format after all
            continue
    return None


def check_pixel_count(path: str | Path, width: int, height: int, what: str = "its header") -> None:
    """Raise ImageReadError if a ``width`` x ``height`` image is above
    :data:`MAX_IMAGE_PIXELS`; ``what`` says where the size comes from."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            path,
            f"{what} gives {width}x{height} pixels "
            f"({width * height / 1e6:.1f} megapixels), more than the "
            f"limit of {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels: refused "
            f"unread (a corrupt header or a decompression bomb; "
            f"DSOD_MAX_IMAGE_PIXELS raises the limit)",
        )


def _header(fp: BinaryIO, path: Path) -> tuple[tuple[int, int], int] | None:
    """The stored ``(width, height)`` and the EXIF orientation (1 when none) from the image
    header in ``fp``, refusing an image above :data:`MAX_IMAGE_PIXELS`; None when Pillow
    cannot read the header (formats it does not know are left to OpenCV, which refuses
    more than 2**30 pixels; a broken header is for the decoders to report)."""
    try:
        image = _open_header(fp)
        if image is None:
            return None
        orientation = 1
        # PNG's getexif() may decode the whole file to look for a late eXIf chunk.
        if image.format == "TIFF" or "exif" in image.info:
            orientation = image.getexif().get(0x0112, 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(path, f"refused unread: {error}") from None
    except Exception:  # noqa: BLE001 - a broken header
        return None
    check_pixel_count(path, *image.size)
    return image.size, orientation if isinstance(orientation, int) else 1


def _check_complete(path: Path, data: np.ndarray) -> None:
    """Raise ImageReadError if ``data`` is a JPEG or PNG that was cut off."""
    head = data[:8].tobytes()
    if head.startswith(_JPEG_SOI):
        tail = data[-1024:].tobytes().rstrip(_TRAILING_PADDING)
        if tail.endswith(_JPEG_EOI):
            return
        try:  # appended data after a complete JPEG, or a cut-off one?
            with Image.open(io.BytesIO(data.tobytes())) as image:
                image.load()
        except UnidentifiedImageError:  # its message holds the repr of the BytesIO
            raise ImageReadError(path, "broken JPEG: its header cannot be parsed") from None
        except OSError as error:
            if "truncated" in str(error):
                raise ImageReadError(
                    path, "truncated JPEG: the end-of-image marker (FFD9) is missing"
                ) from None
            raise ImageReadError(path, f"broken JPEG: {error}") from None
    elif head == _PNG_SIGNATURE:
        tail = data[-1024:].tobytes().rstrip(_TRAILING_PADDING)
        if not tail.endswith(_PNG_IEND):
            raise ImageReadError(path, "truncated PNG: the IEND chunk is missing")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a deep array to uint8: integers above 255 by the depth their largest value
    needs, rounded up to an even number of bits (10, 12, 14 or 16: a 12-bit sensor's data in
    a 16-bit file are shifted right by 4, full 16-bit data by 8), float in [0, 1] by 255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "f":
        array = np.nan_to_num(array.astype(np.float64))
        scale = 255.0 if array.size and array.max() <= 1.0 else 1.0
        return np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
    top = int(array.max()) if array.size else 0
    if array.dtype.itemsize >= 2 and top > 255:  # deep data
        bits = top.bit_length() + top.bit_length() % 2
        return np.clip(array.astype(np.int64) >> (bits - 8), 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def _cv2_reason(error: cv2.error) -> str:
    """The one-line gist of an OpenCV error (its message spans lines and names sources)."""
    reason = getattr(error, "err", "") or ""
    if reason and getattr(error, "code", None) == cv2.Error.StsAssert:
        return f"its check {reason} failed"
    lines = str(error).strip().splitlines()
    return reason or (lines[-1] if lines else type(error).__name__)


def _decode_with_pillow(path: Path, data: np.ndarray) -> np.ndarray:
    """Fallback decoder: uint8 BGR ``[H, W, 3]`` via Pillow, EXIF orientation applied."""
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode == "F" or image.mode.startswith("I"):  # one deep channel
                gray = _to_uint8(np.asarray(image))
                rgb = np.repeat(gray.reshape(gray.shape[0], gray.shape[1], -1)[..., :1], 3, 2)
            else:
                rgb = np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:  # its message holds the repr of the BytesIO
        raise ImageReadError(
            path,
            f"cannot decode it as an image: neither OpenCV nor Pillow "
            f"knows its format (it starts with "
            f"{data[:16].tobytes()!r})",
        ) from None
    except Exception as error:  # noqa: BLE001  # Pillow raises many types for undecodable data
        raise ImageReadError(path, f"cannot decode it as an image ({error})") from None
    return np.ascontiguousarray(rgb[..., ::-1])


def read_image(path: str | Path, annotated_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as uint8 BGR ``[H, W, 3]``, EXIF orientation applied.

    ``H`` and ``W`` are the size of the picture as it is meant to be viewed, i.e. after the
    EXIF rotation; :func:`read_image_size` gives the same size without decoding.

    ``annotated_size``, the ``(width, height)`` the image's annotation gives: some tools
    draw boxes on the stored pixels and ignore the EXIF tag. When the EXIF rotation turns
    the picture away from that size (90 degrees: width and height swap) and the stored
    pixels have it, the stored pixels are returned, so that boxes and pixels share one
    frame (``tools/check_dataset.py`` reports every size that does not match).

    Raises:
        ImageReadError: the file is missing, empty, not a regular file, truncated, larger
            than :data:`MAX_IMAGE_PIXELS` or cannot be decoded; the message names the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    header = _header(io.BytesIO(data.tobytes()), path)
    _check_complete(path, data)
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH  # deep data scaled by _to_uint8 below
    if (
        annotated_size is not None
        and header is not None
        and header[1] in _TRANSPOSING_ORIENTATIONS
        and header[0] == tuple(annotated_size)
        and annotated_size[0] != annotated_size[1]
    ):
        # The EXIF rotation would turn the picture away from the size its boxes were drawn
        # on, and the stored pixels have that size: decode them as they are stored.
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as error:  # e.g. a header above OpenCV's own pixel limit
        raise ImageReadError(path, f"OpenCV cannot decode it ({_cv2_reason(error)})") from None
    if image is None:
        image = _decode_with_pillow(path, data)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageReadError(path, f"decoded to an unusable array of shape {image.shape}")
    if image.dtype != np.uint8:
        image = _to_uint8(image)
    return image


_ORIENTATION_NAMES = {
    2: "mirrored",
    3: "turned 180 degrees",
    4: "flipped upside down",
    5: "mirrored and turned 90 degrees",
    6: "turned 90 degrees clockwise",
    7: "mirrored and turned 270 degrees",
    8: "turned 90 degrees counter-clockwise",
}


def ambiguous_orientation(path: str | Path) -> str | None:
    """What the EXIF orientation of image ``path`` does, when its size cannot tell whether
    an annotation's boxes were drawn on the stored pixels or on the turned picture: a
    mirror or a half turn (orientations 2-4, which keep the size) or a quarter turn of a
    square image (5-8). :func:`read_image` then applies the rotation, as viewers do; boxes
    drawn by a tool that ignores EXIF would not fit. None when there is no such rotation,
    or the header cannot be read."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            header = _header(file, path)
    except (OSError, ImageReadError):
        return None
    if header is None:
        return None
    (width, height), orientation = header
    if orientation in (2, 3, 4) or (orientation in _TRANSPOSING_ORIENTATIONS and width == height):
        return f"EXIF orientation {orientation}: {_ORIENTATION_NAMES[orientation]}"
    return None


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`read_image` would return it.

    Reads only the header where Pillow can (EXIF orientations 5..8 swap width and height);
    otherwise decodes the image.

    Raises:
        ImageReadError: the file is missing, empty, not a regular file, not an image, or
            larger than :data:`MAX_IMAGE_PIXELS` (refused without decoding).
    """
    path = Path(path)
    _check_regular_file(path)
    try:
        file = open(path, "rb")
    except OSError as error:
        raise ImageReadError(path, error.strerror or str(error)) from None
    with file:
        header = _header(file, path)
    if header is None:
        height, width = read_image(path).shape[:2]
        return int(width), int(height)
    (width, height), orientation = header
    if width <= 0 or height <= 0:
        raise ImageReadError(path, f"the header gives an empty size {width}x{height}")
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return int(width), int(height)
