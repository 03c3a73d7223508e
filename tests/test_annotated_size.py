"""DetectionDataset.load_image: an image stored at another size than its annotation declares
is used at the annotation's size, the frame its boxes are in."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from dsod.data import loader, transforms
from dsod.data.base import DetectionDataset
from dsod.structures import Annotation


def _dataset(path, width: int, height: int) -> DetectionDataset:
    box = np.array([[40, 20, 80, 60]], dtype=np.float32)  # in the annotation's pixels
    ann = Annotation(
        "a",
        str(path),
        width,
        height,
        boxes=box,
        labels=np.array([1], dtype=np.int64),
        difficult=np.zeros(1, dtype=bool),
    )
    return DetectionDataset(["cat"], [ann], [])


def _picture(height: int, width: int) -> np.ndarray:
    """Black, with a white block over the middle half: (x, y) in [w/4, 3w/4) x [h/4, 3h/4)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    return image


def test_downscaled_image_is_resized_to_the_annotated_size(tmp_path):
    # Annotated at 120x80, stored downscaled 2x to 60x40 (the XML unchanged).
    cv2.imwrite(str(tmp_path / "a.png"), _picture(40, 60))
    dataset = _dataset(tmp_path / "a.png", 120, 80)
    image, targets = dataset.load(0)
    assert image.shape == (80, 120, 3) and image.dtype == np.uint8
    expected = cv2.resize(_picture(40, 60), (120, 80), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(image, expected)
    assert image[40, 60].tolist() == [255, 255, 255] and image[5, 5].tolist() == [0, 0, 0]
    assert targets.boxes.tolist() == [[40, 20, 80, 60]]  # boxes keep the annotation frame
    # Evaluation takes the image size from the loaded image: the annotation's size.
    _, _, size = loader.TestSamples(dataset, transforms.TestTransform(32))[0]
    assert size == (120, 80)


def test_image_of_the_annotated_size_is_unchanged(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), _picture(80, 120))
    np.testing.assert_array_equal(
        _dataset(tmp_path / "a.png", 120, 80).load_image(0), _picture(80, 120)
    )


@pytest.mark.parametrize("annotated", [(24, 16), (16, 24)])
def test_exif_rotated_image_is_not_resized(tmp_path, annotated):
    # Stored 24x16 with EXIF orientation 6 (viewed 16x24): an annotation of either size
    # matches one frame of the picture, which read_image picks; nothing is stretched.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "o6.jpg"
    Image.fromarray(_picture(16, 24)).save(path, exif=exif, quality=98)
    image = _dataset(path, *annotated).load_image(0)
    assert image.shape == (annotated[1], annotated[0], 3)
    stored = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if annotated == (24, 16):
        np.testing.assert_array_equal(image, stored)
    else:
        np.testing.assert_array_equal(image, np.rot90(stored, -1))  # turned, not resized


def test_an_annotated_size_above_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    # A typo in <size> (an extra digit) must not make every load allocate a huge image.
    from dsod.data import image_io
    from dsod.data.errors import ImageReadError

    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 100 * 100)
    cv2.imwrite(str(tmp_path / "a.png"), _picture(40, 60))
    dataset = _dataset(tmp_path / "a.png", 600, 400)
    with pytest.raises(ImageReadError, match=r"its annotation gives 600x400 pixels"):
        dataset.load_image(0)
