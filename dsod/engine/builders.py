"""The one place that turns a config into objects: model, priors, loss, post-processor, data."""

from __future__ import annotations

import torch
from torch import nn

from dsod.box_coder import BoxCoder
from dsod.config import Config
from dsod.data.datasets import build_dataset, check_classes, check_trainable
from dsod.data.loader import DetectionDataset, TrainingSamples
from dsod.data.transforms import TrainTransform
from dsod.engine.optim import scaled_lr
from dsod.loss import MultiBoxLoss
from dsod.matching import TargetEncoder
from dsod.models.detector import DSOD
from dsod.models.heads import unit_rate_scale
from dsod.postprocess import PostProcessor
from dsod.priors import PriorGenerator, priors_per_location

__all__ = [
    "build_model",
    "head_input_scale",
    "build_priors",
    "build_dataset",
    "build_loss",
    "build_postprocessor",
    "build_training_samples",
]


def build_priors(config: Config) -> PriorGenerator:
    """The prior generator of a config, with feature sizes derived from the input size."""
    num_sources = len(config.priors.min_sizes)
    if config.model.arch == "dsod":
        sizes = DSOD.feature_sizes(config.model.input_size, num_sources)
    else:
        from dsod.models.ssd_vgg import ssd_vgg_feature_sizes

        sizes = ssd_vgg_feature_sizes(config.model.input_size)
    return PriorGenerator(
        config.model.input_size,
        sizes,
        config.priors.min_sizes,
        config.priors.max_sizes,
        config.priors.aspect_ratios,
        config.priors.steps,
        config.priors.offset,
        config.priors.clip,
    )


def head_input_scale(config: Config) -> float:
    """The heads' initial L2Norm scale: ``model.l2norm_scale``, or where it is None, the
    scale at which heads without BN learn at the solver's rate
    (:func:`~dsod.models.heads.unit_rate_scale`; 20, the reference's, for heads with BN,
    whose BN makes the scale of their input irrelevant)."""
    if config.model.l2norm_scale is not None:
        return config.model.l2norm_scale
    if config.model.head_bn:
        return 20.0
    return unit_rate_scale(scaled_lr(config.solver))


def build_model(config: Config) -> nn.Module:
    """The detector a config describes (DSOD, or the torchvision VGG SSD baseline)."""
    per_location = [priors_per_location(r) for r in config.priors.aspect_ratios]
    m = config.model
    if m.arch == "ssd300_vgg16":
        from dsod.models.ssd_vgg import SSDVGG16

        return SSDVGG16(config.num_classes, per_location)
    return DSOD(
        num_classes=config.num_classes,
        priors_per_location=per_location,
        stem_channels=m.stem_channels,
        growth_rate=m.growth_rate,
        bottleneck_width=m.bottleneck_width,
        block_layers=m.block_layers,
        compression=m.compression,
        backbone_out_channels=m.backbone_out_channels,
        prediction=m.prediction,
        extra_widths=m.extra_widths,
        l2norm_scale=head_input_scale(config),
        head_bn_eps=m.head_bn_eps,
        head_bn_init_scale=m.head_bn_init_scale,
        head_bn=m.head_bn,
        head_prior_prob=m.head_prior_prob,
    )


def build_loss(config: Config) -> nn.Module:
    """MultiBox loss with the config's mining ratio and box-loss weight."""
    return MultiBoxLoss(config.loss.neg_pos_ratio, config.loss.loc_weight)


def build_postprocessor(config: Config, priors: torch.Tensor | None = None) -> PostProcessor:
    """Detection output with the config's test settings."""
    if priors is None:
        priors = build_priors(config)()
    t = config.test
    return PostProcessor(
        priors,
        BoxCoder(config.priors.variances),
        t.conf_threshold,
        t.nms_iou,
        t.top_k,
        t.keep_top_k,
    )


def build_training_samples(
    config: Config, dataset: DetectionDataset | None = None
) -> TrainingSamples:
    """The training set with SSD augmentation and prior matching."""
    if dataset is None:
        dataset = build_dataset(config.data, "train")
    source = f"the training split {list(config.data.train)} under {config.data.root}"
    check_classes(dataset, config.num_object_classes, source=source, expected_from="the config")
    check_trainable(dataset, source)
    encoder = TargetEncoder(
        build_priors(config)(),
        BoxCoder(config.priors.variances),
        config.loss.match_iou,
        config.loss.neg_iou,
    )
    transform = TrainTransform(config.model.input_size, config.augment)
    # The training set leaves out "difficult" boxes itself unless data.train_difficult.
    return TrainingSamples(
        dataset,
        transform,
        encoder,
        seed=config.train.seed,
        on_bad_sample=config.data.on_bad_sample,
    )
