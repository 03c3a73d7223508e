"""The one place that turns a config into objects: model, priors, loss, post-processor, data."""

from __future__ import annotations

import torch
from torch import nn

from dsod.box_coder import BoxCoder
from dsod.config import Config
from dsod.data.datasets import build_dataset, check_classes, check_trainable
from dsod.data.loader import DetectionDataset, TrainingSamples
from dsod.data.transforms import TrainTransform
from dsod.loss import MultiBoxLoss
from dsod.matching import TargetEncoder
from dsod.models.detector import build_model, build_priors
from dsod.postprocess import PostProcessor

__all__ = ["build_model", "build_priors", "build_dataset", "build_loss", "build_postprocessor",
           "build_training_samples"]


def build_loss(config: Config) -> nn.Module:
    """MultiBox loss with the config's mining ratio and box-loss weight."""
    return MultiBoxLoss(config.loss.neg_pos_ratio, config.loss.loc_weight)


def build_postprocessor(config: Config, priors: torch.Tensor | None = None) -> PostProcessor:
    """Detection output with the config's test settings."""
    if priors is None:
        priors = build_priors(config)()
    t = config.test
    return PostProcessor(priors, BoxCoder(config.priors.variances), t.conf_threshold, t.nms_iou,
                         t.top_k, t.keep_top_k)


def build_training_samples(config: Config, dataset: DetectionDataset | None = None
                           ) -> TrainingSamples:
    """The training set with SSD augmentation and prior matching."""
    if dataset is None:
        dataset = build_dataset(config.data, "train")
    source = f"the training split {list(config.data.train)} under {config.data.root}"
    check_classes(dataset, config.num_classes, source=source, expected_from="the config")
    check_trainable(dataset, source)
    encoder = TargetEncoder(build_priors(config)(), BoxCoder(config.priors.variances),
                            config.loss.match_iou, config.loss.neg_iou)
    transform = TrainTransform(config.model.input_size, config.augment)
    # The training set leaves out "difficult" boxes itself unless data.train_difficult.
    return TrainingSamples(dataset, transform, encoder, seed=config.train.seed,
                           on_bad_sample=config.data.on_bad_sample)
