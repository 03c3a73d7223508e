"""Class names as they are read: one Unicode form, no surrounding spaces, and one class for
names that differ only in case or spacing.

Every place a class name is read (a VOC ``<name>``, a COCO category name, the config's
``data.class_names``) passes it through :func:`clean_class_name`: Unicode NFC (``känguru``
typed with a combining diaeresis is the same name as with the precomposed letter) and no
leading or trailing whitespace. Names whose :func:`class_key` is equal (the same up to case
and the whitespace inside them: ``kangaroo``, ``Kangaroo``, ``KANGAROO``, ``kan garoo``)
name one class:

* read from the annotations (``data.class_names: null``), they are merged into one class
  spelled as most of its objects spell it (:func:`merge_spellings`), with a warning that
  names each spelling, its count and a file that uses it;
* a class list that holds two of them (the config's, or a COCO file's categories) is
  refused (:func:`find_clashes`): their labels could not be told apart.

It belongs to the config, the bottom layer: the config cleans ``data.class_names`` with it,
and every reader above imports it from here.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def clean_class_name(name: str) -> str:
    """``name`` in Unicode NFC without leading or trailing whitespace."""
    return unicodedata.normalize("NFC", str(name)).strip()


def class_key(name: str) -> str:
    """What two spellings of one class share: the cleaned name case-folded, without any
    whitespace (``" Kan garoo "`` and ``"kangaroo"`` give ``"kangaroo"``)."""
    return "".join(clean_class_name(name).casefold().split())


@dataclass
class Spellings:
    """The spellings of one class found in the annotations: how many objects use each, and
    the first file that uses it."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, file: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        self.examples.setdefault(name, file)

    @property
    def chosen(self) -> str:
        """The spelling most objects use (ties: the first in sorted order)."""
        return min(self.counts, key=lambda n: (-self.counts[n], n))

    def describe(self) -> str:
        """``'kangaroo' (12 objects, e.g. a.xml), 'Kangaroo' (3 objects, e.g. b.xml)``."""
        ordered = sorted(self.counts, key=lambda n: (-self.counts[n], n))
        return ", ".join(
            f"{name!r} ({self.counts[name]} object{'s' * (self.counts[name] != 1)},"
            f" e.g. {self.examples[name]})"
            for name in ordered
        )


def collect_spellings(found: Iterable[tuple[str, str]]) -> dict[str, Spellings]:
    """``class_key -> Spellings`` of ``(name, file)`` pairs, one per object; names are
    cleaned (:func:`clean_class_name`) and empty ones skipped."""
    groups: dict[str, Spellings] = {}
    for name, file in found:
        name = clean_class_name(name)
        if name:
            groups.setdefault(class_key(name), Spellings()).add(name, file)
    return groups


def merge_spellings(groups: Mapping[str, Spellings]) -> tuple[tuple[str, ...], list[str]]:
    """The class list of :func:`collect_spellings`' groups, sorted, one name per group (its
    most common spelling), and one warning per group that had several spellings, saying
    what they were and which one the class takes."""
    names = tuple(sorted(group.chosen for group in groups.values()))
    warnings = [
        f"class names that differ only in case or spacing are one class, "
        f"{group.chosen!r}: {group.describe()}; rename them in the annotations to "
        f"silence this"
        for group in groups.values()
        if len(group.counts) > 1
    ]
    return names, sorted(warnings)


def find_clashes(names: Sequence[str]) -> list[list[str]]:
    """The groups of two or more entries of ``names`` that are one class by
    :func:`class_key` (the same name twice included), in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(class_key(name), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def describe_clashes(clashes: Sequence[Sequence[str]]) -> str:
    """``'car' and 'Car'; 'bus' and 'bus'`` for messages."""
    return "; ".join(" and ".join(repr(n) for n in group) for group in clashes)
