"""PASCAL VOC layout: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, split lists in
``ImageSets/Main/<split>.txt``: the data set of one or more splits, and the class list its
annotations name.

One XML file is read by :mod:`dsod.data.voc_xml` (box conventions there); split files and
folders are found by :mod:`dsod.data.voc_layout`. :func:`parse_voc_xml`,
:func:`voc_split_paths`, :func:`layout_hint` and :func:`read_split_ids` are re-exported here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from dsod.config.class_names import collect_spellings, merge_spellings
from dsod.data.base import DetectionDataset, check_class_names
from dsod.data.errors import AnnotationError, DataError, Problem
from dsod.data.voc_layout import (
    check_root,
    existing_split,
    layout_hint,
    read_split_ids,
    voc_split_paths,
)
from dsod.data.voc_xml import parse_voc_xml, read_xml_root
from dsod.structures import Annotation

__all__ = [
    "VOCDataset",
    "layout_hint",
    "parse_voc_xml",
    "read_split_ids",
    "voc_class_names",
    "voc_split_paths",
]

logger = logging.getLogger(__name__)


def voc_class_names(root: str | Path, splits: Sequence[str]) -> tuple[str, ...]:
    """Every object class named in the XML files of ``splits``, sorted (``data.class_names:
    null``). Files that cannot be parsed are skipped here: reading the data set reports them.

    Names are read as :mod:`dsod.config.class_names` reads them: spellings that differ only
    in case or spacing are one class, named as most of its objects spell it, with a
    warning naming each spelling, its count and a file that uses it.

    Raises:
        SplitNotFoundError: ``root`` or a split file is missing.
        DataError: the annotations name no object at all.
    """
    found: list[tuple[str, str]] = []
    unusable: list[DataError] = []
    listed = 0
    check_root(root)
    for split in [splits] if isinstance(splits, str) else splits:
        split_file, base = existing_split(root, split)
        for image_id in read_split_ids(split_file):
            listed += 1
            xml_path = base / "Annotations" / f"{image_id}.xml"
            try:
                root_node = read_xml_root(xml_path)
            except DataError as error:  # reported when the data set is read
                unusable.append(error)
                continue
            found += [
                (obj.findtext("name") or "", str(xml_path)) for obj in root_node.findall("object")
            ]
    names, warnings = merge_spellings(collect_spellings(found))
    for warning in warnings:
        logger.warning("%s", warning)
    if not names:
        why = (
            f" ({len(unusable)} of the {listed} annotation files listed cannot be read; "
            f"first: {unusable[0]})"
            if unusable
            else ""
        )
        raise DataError(
            f"data.class_names is null, but the annotations of {list(splits)} "
            f"under {root} name no object class{why}"
        )
    return names


class VOCDataset(DetectionDataset):
    """One or more VOC-layout splits, all annotations parsed once at construction.

    Args:
        root: the folder the split names are relative to (``datasets/VOCdevkit``).
        splits: ``SUBDIR/SPLIT`` (``VOC2007/trainval``) or ``SPLIT`` (a VOC-style folder at
            ``root``); see :func:`voc_split_paths`.
        class_names: the object classes; label ``l`` is ``class_names[l - 1]``.
        keep_difficult: False leaves ``difficult`` boxes out of ``training_targets`` and
            ``load`` (never out of ``annotations``, which evaluation uses).
        strict: raise on the first unusable annotation file; otherwise the image is left
            out and the trouble recorded as an ``"error"`` in ``problems``.

    ``problems`` lists every :class:`Problem` found while parsing.

    Raises:
        SplitNotFoundError: ``root`` or a split file is missing (a DataError).
        DataError: a split lists no image, or ``class_names`` is empty or repeats a name.
    """

    def __init__(
        self,
        root: str | Path,
        splits: Sequence[str],
        class_names: Sequence[str],
        keep_difficult: bool = True,
        strict: bool = False,
    ) -> None:
        root = Path(root)
        names = check_class_names(class_names)
        check_root(root)
        if isinstance(splits, str):
            splits = (splits,)
        annotations: list[Annotation] = []
        problems: list[Problem] = []
        seen: set[Path] = set()
        for split in splits:
            split_file, base = existing_split(root, split)
            ids = read_split_ids(split_file)
            images_dir = base / "JPEGImages"
            try:
                image_names: set[str] | None = set(os.listdir(images_dir))
            except OSError:
                image_names = None
            if not ids:
                raise AnnotationError(split_file, f"split {split!r} lists no images")
            for image_id in ids:
                xml_path = base / "Annotations" / f"{image_id}.xml"
                if xml_path in seen:
                    problems.append(
                        Problem(
                            str(split_file),
                            f"{image_id} is listed more than once; kept once",
                            "warning",
                            "duplicate",
                        )
                    )
                    continue
                seen.add(xml_path)
                try:
                    ann, found = parse_voc_xml(xml_path, names, images_dir, image_names)
                except DataError as error:
                    if strict:
                        raise
                    reason = getattr(error, "reason", None) or str(error)
                    problems.append(
                        Problem(
                            str(xml_path),
                            f"{reason}; image left out",
                            "error",
                            "malformed_annotation",
                        )
                    )
                    continue
                annotations.append(ann)
                problems.extend(found)
        super().__init__(names, annotations, problems, keep_difficult)
        self.root = root
        self.splits = tuple(splits)
