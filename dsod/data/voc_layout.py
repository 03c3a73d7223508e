"""Where a VOC split lives: ``root/[SUBDIR/]ImageSets/Main/<split>.txt`` and its base folder,
the image ids it lists, and a hint naming the root or split that would work when it is not
found."""

from __future__ import annotations

from pathlib import Path

from dsod.data.base import README_HINT
from dsod.data.errors import AnnotationError, SplitNotFoundError


def voc_split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(split_file, base_dir)`` of a split name.

    ``SUBDIR/SPLIT`` is ``root/SUBDIR/ImageSets/Main/SPLIT.txt`` (base ``root/SUBDIR``); a
    plain ``SPLIT`` is ``root/ImageSets/Main/SPLIT.txt`` (base ``root``).
    """
    subdir, _, name = split.strip().strip("/").rpartition("/")
    base = Path(root) / subdir if subdir else Path(root)
    return base / "ImageSets" / "Main" / f"{name}.txt", base


def layout_hint(root: str | Path, split: str) -> str:
    """What ``data.root`` / ``data.train`` would work when ``split`` is not found at
    ``root`` but a VOC year folder lies below it (``root/VOC2007/``,
    ``root/VOCdevkit/VOC2007/``); empty when there is none."""
    root = Path(root)
    name = split.strip().strip("/").rpartition("/")[2]
    found = []
    for pattern in ("*/ImageSets/Main", "*/*/ImageSets/Main"):
        found += sorted(p.parent.parent for p in root.glob(pattern) if p.is_dir())
    for folder in found:
        relative = folder.relative_to(root)
        lists = folder / "ImageSets" / "Main"
        if (lists / f"{name}.txt").is_file():
            return (
                f"; {relative}/ below it holds {name}.txt: use data.root={root} with "
                f"split {relative.as_posix()}/{name}, or data.root={folder} with split "
                f"{name}"
            )
    if found:
        names = sorted(p.stem for p in (found[0] / "ImageSets" / "Main").glob("*.txt"))
        return (
            f"; {found[0].relative_to(root)}/ below it is a VOC folder with the splits "
            f"{names}: use data.root={found[0]} and one of those"
        )
    return ""


def check_root(root: str | Path) -> None:
    """Raise a SplitNotFoundError (naming the absolute path) unless ``root`` is a folder."""
    if not Path(root).is_dir():
        raise SplitNotFoundError(
            f"VOC data set root {root} (absolute: {Path(root).absolute()}) "
            f"does not exist or is not a folder; {README_HINT}"
        )


def existing_split(root: str | Path, split: str) -> tuple[Path, Path]:
    """:func:`voc_split_paths` of a split whose file exists; else a SplitNotFoundError that
    says which root or split would work (:func:`layout_hint`)."""
    split_file, base = voc_split_paths(root, split)
    if not split_file.is_file():
        hint = layout_hint(root, split) or f"; {README_HINT}"
        raise SplitNotFoundError(
            f"split {split!r}: the split file {split_file} does not exist{hint}"
        )
    return split_file, base


def read_split_ids(split_file: Path) -> list[str]:
    """Image ids listed in a split file (first token per line; blank lines skipped)."""
    try:
        lines = split_file.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as error:
        raise AnnotationError(split_file, f"{error.strerror or error}; {README_HINT}") from None
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
