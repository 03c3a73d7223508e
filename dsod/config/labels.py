"""The label convention, named once: label 0 is the background, the ``C`` object classes
are labels ``1..C``, and a detector scores ``C + 1`` classes, the background first
(``model.num_classes``, :attr:`~dsod.config.schema.Config.num_classes`; ``C`` is
:attr:`~dsod.config.schema.Config.num_object_classes`). Label ``l`` is class name
``class_names[l - 1]``.
"""

from __future__ import annotations

__all__ = ["BACKGROUND", "object_labels", "with_background", "without_background"]

BACKGROUND = 0
"""The background's label: the first of a detector's class scores."""


def with_background(num_object_classes: int) -> int:
    """The number of classes a detector scores for ``num_object_classes`` object classes:
    those and the background (``model.num_classes``)."""
    return num_object_classes + 1


def without_background(num_classes: int) -> int:
    """The object classes among the ``num_classes`` a detector scores: all but the
    background."""
    return num_classes - 1


def object_labels(num_object_classes: int) -> range:
    """The labels of ``num_object_classes`` object classes: ``1..C``, after the background."""
    return range(BACKGROUND + 1, with_background(num_object_classes))
