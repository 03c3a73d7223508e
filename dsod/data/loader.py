"""Training and test samples, and the deterministic iteration-based batch order.

Training data is a pure function of ``(seed, step)``: the sample order comes from one
permutation per epoch and each sample's augmentation from a generator seeded by
``(seed, epoch, index)``. A resumed run therefore sees exactly the batches an uninterrupted
run would, whatever the number of workers.

Matching happens here, in the loader's workers, so the training process only runs the
network and the loss.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dsod.data.base import DetectionDataset
from dsod.data.errors import DataError
from dsod.data.transforms import TestTransform, TrainTransform
from dsod.matching import TargetEncoder
from dsod.structures import Annotation

logger = logging.getLogger(__name__)

# How many following samples to try in place of an unreadable one before giving up.
_MAX_SUBSTITUTES = 16


class TrainingBatch(NamedTuple):
    """Training data as the step takes it: one micro-batch from :func:`collate_training`,
    or, without the batch dimension, one sample of :class:`TrainingSamples`.

    Attributes:
        images: ``float32 [B, 3, S, S]`` network inputs (BGR minus the mean, not scaled).
        target_offsets: ``float32 [B, P, 4]`` each prior's encoded ground-truth offsets
            (:class:`~dsod.matching.TargetEncoder`; 0 where the prior is not positive).
        target_labels: ``int64 [B, P]`` each prior's label: ``1..C`` positive, 0
            background, -1 ignored.
        skipped: the data-set indices of unreadable samples replaced in it.
    """

    images: torch.Tensor
    target_offsets: torch.Tensor
    target_labels: torch.Tensor
    skipped: tuple[int, ...] = ()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentation, independent of worker and order."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores Ctrl-C and SIGTERM, which reach
    the whole process group (a terminal, torchrun, Slurm). The main process decides when
    to stop (training saves a checkpoint first); workers end with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def close_loader(batches: Iterator) -> None:
    """Stop a DataLoader iterator's worker processes now (told to finish, then joined).

    Left to garbage collection, an iterator that an exception's traceback still holds
    lives until the interpreter exits, where multiprocessing waits forever for workers
    that ignore SIGTERM (:func:`ignore_stop_signals`): a run that failed would never exit.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


class TrainingSamples(Dataset):
    """Items ``(epoch, index)`` -> one sample as a :class:`TrainingBatch` without the batch
    dimension: ``image [3, S, S]``, ``offsets [P, 4]``, ``labels [P]`` and ``skipped``.

    ``skipped`` is the tuple of data-set indices of unreadable samples that were replaced
    by the next readable one (warned and counted by file; with ``on_bad_sample="error"``
    the first one stops the run instead).
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        transform: TrainTransform,
        encoder: TargetEncoder,
        seed: int = 0,
        on_bad_sample: str = "skip",
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.encoder = encoder
        self.seed = seed
        self.on_bad_sample = on_bad_sample

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, index: int) -> tuple[np.ndarray, Annotation, tuple[int, ...]]:
        failed: list[int] = []
        for attempt in range(_MAX_SUBSTITUTES):
            candidate = (index + attempt) % len(self.dataset)
            try:
                image, annotation = self.dataset.load(candidate)
                return image, annotation, tuple(failed)
            except DataError as error:
                failed.append(candidate)
                if self.on_bad_sample == "error":
                    raise
                logger.warning("skipping unreadable sample: %s", error)
        raise DataError(
            f"{_MAX_SUBSTITUTES} samples in a row from index {index} are "
            f"unreadable; run tools/check_dataset.py on this config"
        )

    def __getitem__(self, key: tuple[int, int]) -> TrainingBatch:
        epoch, index = key
        image, annotation, skipped = self._load(index)
        self.transform.set_seed(sample_seed(self.seed, epoch, index))
        image, boxes, labels = self.transform(image, annotation.boxes, annotation.labels)
        offsets, prior_labels = self.encoder(torch.from_numpy(boxes), torch.from_numpy(labels))
        return TrainingBatch(torch.from_numpy(image), offsets, prior_labels, skipped)


def collate_training(batch: list[TrainingBatch]) -> TrainingBatch:
    """Stack samples into a micro-batch; the unreadable samples' indices are joined into
    one tuple."""
    images, offsets, labels, skipped = zip(*batch)
    return TrainingBatch(
        torch.stack(images),
        torch.stack(offsets),
        torch.stack(labels),
        tuple(i for part in skipped for i in part),
    )


class IterationBatchSampler(Sampler):
    """Yields the micro-batches of ``(epoch, index)`` keys of one process, step after step.

    The samples form one endless stream: epoch ``e`` is a permutation of the data set seeded
    by ``(seed, e)``. Step ``s`` takes stream positions ``[s*B, (s+1)*B)`` for the global
    batch ``B``; process ``r`` of ``W`` takes the ``r``-th contiguous share of ``B / W``, cut
    into micro-batches of ``micro_batch``. So a step is the same set of samples whatever
    ``W`` and the accumulation, and starting at ``start_step`` continues a run exactly.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        micro_batch: int,
        seed: int = 0,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_steps: int | None = None,
    ) -> None:
        if global_batch % (world_size * micro_batch):
            raise ValueError(
                f"the batch of {global_batch} images does not split into "
                f"{world_size} processes x micro-batches of {micro_batch}"
            )
        if num_samples < 1:
            raise ValueError("the training set is empty")
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self.max_steps = max_steps
        self._permutations: dict[int, np.ndarray] = {}

    @property
    def micro_batches_per_step(self) -> int:
        return self.global_batch // (self.world_size * self.micro_batch)

    def _key(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.num_samples)
        if epoch not in self._permutations:
            self._permutations = {
                epoch: np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            }
        return epoch, int(self._permutations[epoch][offset])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        share = self.global_batch // self.world_size
        step = self.start_step
        while self.max_steps is None or step < self.max_steps:
            base = step * self.global_batch + self.rank * share
            for micro in range(self.micro_batches_per_step):
                start = base + micro * self.micro_batch
                yield [self._key(p) for p in range(start, start + self.micro_batch)]
            step += 1

    def __len__(self) -> int:
        if self.max_steps is None:
            raise TypeError("an endless sampler has no length")
        return (self.max_steps - self.start_step) * self.micro_batches_per_step


class TestSamples(Dataset):
    """Items ``index`` -> ``(image [3,S,S] or None, index, (width, height))``.

    An unreadable image yields ``None`` and a warning (its ground truth still counts as
    missed), or an error with ``on_bad_sample="error"``.
    """

    def __init__(
        self, dataset: DetectionDataset, transform: TestTransform, on_bad_sample: str = "skip"
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.on_bad_sample = on_bad_sample

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, tuple[int, int]]:
        try:
            image = self.dataset.load_image(index)
        except DataError as error:
            if self.on_bad_sample == "error":
                raise
            logger.warning("skipping unreadable test image: %s", error)
            return None, index, (0, 0)
        height, width = image.shape[:2]
        tensor, _, _ = self.transform(image)
        return torch.from_numpy(tensor), index, (width, height)


def collate_test(
    batch: list,
) -> tuple[torch.Tensor | None, list[int], list[tuple[int, int]], list[int]]:
    """Stack readable images; return ``(images, indices, sizes, unreadable_indices)``."""
    readable = [item for item in batch if item[0] is not None]
    images = torch.stack([item[0] for item in readable]) if readable else None
    return (
        images,
        [item[1] for item in readable],
        [item[2] for item in readable],
        [item[1] for item in batch if item[0] is None],
    )
