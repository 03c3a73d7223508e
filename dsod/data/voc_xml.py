"""One PASCAL VOC XML annotation read into an :class:`~dsod.structures.Annotation`, with the
problems found in it.

Boxes follow :mod:`dsod.structures`: the XML's 1-based inclusive ``(xmin, ymin, xmax, ymax)``
becomes the continuous ``xyxy`` box ``(xmin - 1, ymin - 1, xmax, ymax)``. A box whose XML
corners coincide or are reversed (``xmax <= xmin`` or ``ymax <= ymin``) was drawn with no
extent: it is dropped with a ``zero_size_box`` warning (BCCD has two such boxes).
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from dsod.config.class_names import class_key, clean_class_name
from dsod.data.errors import AnnotationError, ImageReadError, Problem
from dsod.data.image_io import read_image_size
from dsod.structures import Annotation

_IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".JPG",
    ".JPEG",
    ".PNG",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
)


def _number(text: str | None) -> float | None:
    """A finite float from an XML text, or None."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _positive_int(text: str | None) -> int | None:
    """A whole number from 1 to 1e7 from an XML text (an image side), or None."""
    value = _number(text)
    if value is None or value < 1 or value != int(value) or value > 1e7:
        return None
    return int(value)


def _resolve_image(
    stem: str, images_dir: str, filename: str | None, names: Collection[str] | None
) -> tuple[str, str | None]:
    """The image of an annotation, and a note when its own image is missing and its
    ``<filename>`` names another that exists.

    The image is ``<stem>.jpg``, else ``<stem>`` with another image suffix, else the XML's
    ``<filename>`` if it names a file of that stem (``<stem>.jfif``); ``<stem>.jpg`` when
    none exists. A ``<filename>`` of another stem is never used: it names another image
    (an annotation copied from another file), and taking it would train this annotation's
    boxes on that image's pixels. ``names``, the files in ``images_dir`` if known, saves a
    ``stat`` per candidate."""

    def exists(name: str) -> bool:
        return (
            name in names if names is not None else os.path.isfile(os.path.join(images_dir, name))
        )

    candidates = [f"{stem}{suffix}" for suffix in _IMAGE_SUFFIXES]
    named = os.path.basename(filename.strip()) if filename else ""
    if named and os.path.splitext(named)[0] == stem:
        candidates.append(named)
    found = next((c for c in candidates if exists(c)), None)
    note = None
    if found is None and named and named not in candidates and exists(named):
        note = (
            f"the image {stem}.jpg (or {stem} with another image suffix) does not exist; "
            f"<filename> names {named}, another image, which is not used for it"
        )
    return os.path.join(images_dir, found or candidates[0]), note


def read_xml_root(path: Path) -> ET.Element:
    """The root element of XML file ``path``, its tags without namespaces (a VOC file
    written with ``xmlns="..."`` names its elements ``{uri}object``; they are read as
    ``object``); an AnnotationError that says why it cannot be read."""
    root = _parse(path)
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = element.tag.partition("}")[2]
    return root


def missing_annotation_hint(path: Path) -> str:
    """Why annotation file ``path`` (``Annotations/<id>.xml``) may be missing, as a clause
    to add to the message: an id listed with an image suffix (``00001.jpg``), or the file
    named with an upper-case ``.XML``; empty when neither."""
    image_id = path.name[: -len(".xml")] if path.name.endswith(".xml") else path.stem
    stem, suffix = os.path.splitext(image_id)
    if suffix.lower() in {s.lower() for s in _IMAGE_SUFFIXES}:
        exists = (path.parent / f"{stem}.xml").is_file()
        return (
            f"; the split file lists the id {image_id!r} with an image suffix: ids are "
            f"listed without one ({stem!r}" + (f", whose {stem}.xml exists)" if exists else ")")
        )
    for other in (path.with_name(f"{image_id}.XML"), path.with_name(f"{image_id}.Xml")):
        if other.is_file():
            return f"; {other.name} exists: annotation files must end in .xml, in lower case"
    return ""


def _encoding_hint(path: Path) -> str:
    """A clause for a parse error of a file that is not UTF-8 and declares no encoding
    (XML without a declaration must be UTF-8: a Latin-1 ``ä`` is an invalid token)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    try:
        data.decode("utf-8")
        return ""
    except UnicodeDecodeError as error:
        byte, offset = data[error.start], error.start
    if re.match(rb"\s*<\?xml[^>]*encoding\s*=", data.lstrip(b"\xef\xbb\xbf")):
        return (
            f"; byte 0x{byte:02x} at offset {offset} is not in the encoding its XML "
            f"declaration names"
        )
    return (
        f"; the file is not UTF-8 (byte 0x{byte:02x} at offset {offset}) and declares no "
        f"encoding, which XML then requires: save it as UTF-8, or declare its encoding "
        f'(<?xml version="1.0" encoding="ISO-8859-1"?> for Latin-1)'
    )


def _parse(path: Path) -> ET.Element:
    """The root element of XML file ``path``; an AnnotationError that says why it cannot be
    read."""
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise AnnotationError(
            path, f"the file does not exist{missing_annotation_hint(path)}"
        ) from None
    except ET.ParseError as error:
        raise AnnotationError(path, f"malformed XML: {error}{_encoding_hint(path)}") from None
    except OSError as error:
        raise AnnotationError(path, error.strerror or str(error)) from None
    except Exception as error:  # noqa: BLE001  # e.g. an unknown encoding in the XML declaration
        raise AnnotationError(path, f"cannot parse the XML: {error}") from None


def parse_voc_xml(
    path: str | Path,
    class_names: Sequence[str],
    images_dir: str | Path | None = None,
    image_names: Collection[str] | None = None,
) -> tuple[Annotation, list[Problem]]:
    """Read one VOC XML annotation.

    Args:
        path: the XML file; its stem is the ``image_id``.
        class_names: label ``l`` is ``class_names[l - 1]``. An object's ``<name>`` is read
            as :func:`~dsod.config.class_names.clean_class_name` reads it; one that differs
            from a class only in case or spacing is that class (a ``class_variant``
            warning).
        images_dir: where the image is; default ``<path>/../../JPEGImages``.
        image_names: the file names in ``images_dir``, if known (faster than a ``stat``).

    Returns:
        The annotation (boxes float32 ``[N, 4]`` absolute ``xyxy`` inside the image, see the
        module docstring; labels int64 ``[N]`` in ``1..C``; difficult bool ``[N]``) and the
        problems found: boxes of a class spelled otherwise are kept; boxes with an unknown
        class, bad or missing coordinates, zero or negative size, or entirely outside the
        image are dropped; boxes partly outside are clipped; a missing ``<size>`` is read
        from the image. All are warnings.

    Raises:
        AnnotationError: the file is missing or not well-formed XML, or it has no usable
            ``<size>`` and the image cannot be read.
    """
    path = Path(path)
    images_dir = Path(images_dir) if images_dir is not None else path.parent.parent / "JPEGImages"
    class_index = {name: label for label, name in enumerate(class_names, start=1)}
    by_key = {class_key(name): (label, name) for name, label in class_index.items()}
    root = read_xml_root(path)
    file = str(path)
    problems: list[Problem] = []
    image_path, note = _resolve_image(
        path.stem, str(images_dir), root.findtext("filename"), image_names
    )
    if note is not None:
        problems.append(Problem(file, note, "warning", "missing_image"))
    size = root.find("size")
    width = _positive_int(size.findtext("width")) if size is not None else None
    height = _positive_int(size.findtext("height")) if size is not None else None
    if width is None or height is None:
        try:
            width, height = read_image_size(image_path)
        except ImageReadError as error:
            raise AnnotationError(
                path, f"no usable <size> and the image cannot be read ({error})"
            ) from None
        problems.append(
            Problem(
                file,
                f"no usable <size> width/height; took {width}x{height} from {image_path}",
                "warning",
                "missing_size",
            )
        )

    boxes: list[list[float]] = []
    labels: list[int] = []
    difficult: list[bool] = []
    for number, obj in enumerate(root.findall("object"), start=1):
        name = clean_class_name(obj.findtext("name") or "")

        def warn(kind: str, message: str) -> None:
            where = f"object {number} ({name or 'no name'})"
            problems.append(Problem(file, f"{where}: {message}", "warning", kind))

        label = class_index.get(name)
        if label is None and class_key(name) in by_key:
            label, spelled = by_key[class_key(name)]
            warn(
                "class_variant",
                f"class {name!r} is counted as {spelled!r} (names that "
                f"differ only in case or spacing are one class)",
            )
        if label is None:
            warn("unknown_class", f"class {name!r} is not in data.class_names; box dropped")
            continue
        bndbox = obj.find("bndbox")
        raw = [
            _number(bndbox.findtext(t)) if bndbox is not None else None
            for t in ("xmin", "ymin", "xmax", "ymax")
        ]
        if any(v is None for v in raw):
            warn("bad_coordinates", "missing or non-numeric <bndbox> coordinates; box dropped")
            continue
        xmin, ymin, xmax, ymax = raw  # type: ignore[misc]
        # VOC boxes include both edge pixels: xmin == xmax is one pixel wide, which the
        # devkit counts as an object like any other.
        if xmax < xmin or ymax < ymin:
            warn(
                "zero_size_box",
                f"box (xmin, ymin, xmax, ymax) = {_fmt(raw)} has negative size; box dropped",
            )
            continue
        if xmax == xmin or ymax == ymin:
            warn(
                "one_pixel_box",
                f"box (xmin, ymin, xmax, ymax) = {_fmt(raw)} is one pixel "
                f"wide or high (VOC boxes include both edges); kept, as the "
                f"devkit keeps it",
            )
        box = [xmin - 1.0, ymin - 1.0, xmax, ymax]
        clipped = [
            min(max(box[0], 0.0), width),
            min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width),
            min(max(box[3], 0.0), height),
        ]
        if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
            warn(
                "box_outside",
                f"box {_fmt(box)} lies outside the {width}x{height} image; box dropped",
            )
            continue
        if clipped != box:
            warn(
                "box_clipped",
                f"box {_fmt(box)} reaches outside the {width}x{height} image; "
                f"clipped to {_fmt(clipped)}",
            )
        flag_text = obj.findtext("difficult")
        flag = _number(flag_text)
        if flag is None and flag_text not in (None, ""):
            warn("bad_field", "<difficult> is not a number; taken as 0")
        boxes.append(clipped)
        labels.append(label)
        difficult.append(bool(flag))

    boxes32 = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    valid = (boxes32[:, 2] > boxes32[:, 0]) & (boxes32[:, 3] > boxes32[:, 1])
    if not valid.all():  # sub-pixel extents that float32 cannot hold
        problems.append(
            Problem(
                file,
                f"{int((~valid).sum())} box(es) too thin for float32 coordinates; dropped",
                "warning",
                "zero_size_box",
            )
        )
    annotation = Annotation(
        image_id=path.stem,
        image_path=image_path,
        width=int(width),
        height=int(height),
        boxes=boxes32[valid],
        labels=np.asarray(labels, dtype=np.int64)[valid],
        difficult=np.asarray(difficult, dtype=bool)[valid],
    )
    return annotation, problems


def _fmt(box: Sequence[float]) -> str:
    """``(x0, y0, x1, y1)`` with short numbers, for messages."""
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"
