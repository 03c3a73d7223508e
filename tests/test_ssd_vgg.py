"""torchvision's SSD300 VGG16 behind DSOD's interface (the paper's from-scratch baseline)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import ssd300_vgg16

from dsod.apps.summary import model_summary
from dsod.box_coder import BoxCoder
from dsod.config import Config, config_from_dict
from dsod.engine.builders import build_model, build_priors
from dsod.loss import MultiBoxLoss
from dsod.matching import TargetEncoder
from dsod.models.detector import count_parameters
from dsod.models.ssd_vgg import SSDVGG16, ssd_vgg_feature_sizes

SSD_PRIORS = {
    "min_sizes": [30, 60, 111, 162, 213, 264],
    "max_sizes": [60, 111, 162, 213, 264, 315],
    "steps": [8, 16, 32, 64, 100, 300],
    "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
}


def ssd_config(**model: object) -> Config:
    return config_from_dict(
        {"name": "ssd", "model": {"arch": "ssd300_vgg16", **model}, "priors": dict(SSD_PRIORS)}
    )


@pytest.fixture(scope="module")
def model() -> SSDVGG16:
    torch.manual_seed(0)
    with torch.no_grad():  # the torchvision builder runs one dummy forward pass
        built = build_model(ssd_config())
    assert isinstance(built, SSDVGG16)
    return built


def test_feature_sizes_and_priors() -> None:
    assert ssd_vgg_feature_sizes(300) == [38, 19, 10, 5, 3, 1]
    assert ssd_vgg_feature_sizes(512) == [64, 32, 16, 8, 6, 4]
    priors = build_priors(ssd_config())
    assert priors.feature_sizes == (38, 19, 10, 5, 3, 1)
    assert priors.priors_per_location == [4, 6, 6, 6, 4, 4]
    assert priors.num_priors == 8732
    with pytest.raises(ValueError, match="268"):
        ssd_vgg_feature_sizes(200)


def test_shapes_at_300(model: SSDVGG16) -> None:
    model.eval()
    with torch.no_grad():
        sources = model.features(torch.zeros(1, 3, 300, 300))
        logits, offsets = model.heads(sources)
    assert [tuple(s.shape[1:]) for s in sources] == [
        (512, 38, 38),
        (1024, 19, 19),
        (512, 10, 10),
        (256, 5, 5),
        (256, 3, 3),
        (256, 1, 1),
    ]
    assert logits.shape == (1, 8732, 21)
    assert offsets.shape == (1, 8732, 4)
    assert torch.isfinite(logits).all() and torch.isfinite(offsets).all()


def test_parameters_match_torchvision(model: SSDVGG16) -> None:
    with torch.device("meta"):  # same network, no memory and no dummy forward pass
        reference = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)
    expected = sum(p.numel() for p in reference.parameters())
    assert count_parameters(model) == expected
    assert sum(p.numel() for p in model.parameters()) == expected
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen from scratch


def test_head_order_matches_priors(model: SSDVGG16) -> None:
    """Prediction ``(row, column, box)`` of a map comes from conv channel ``box * K + k`` at
    ``(row, column)``: the order of dsod.models.heads and the PriorGenerator."""
    torch.manual_seed(1)
    sizes = [(3, 2), (2, 2), (2, 1), (1, 2), (1, 1), (1, 1)]  # the 3x3 convs take any size
    channels = [512, 1024, 512, 256, 256, 256]
    sources = [torch.randn(1, c, h, w) for c, (h, w) in zip(channels, sizes)]
    with torch.no_grad():
        logits, offsets = model.heads(sources)
        start = 0
        for index, (source, k) in enumerate(zip(sources, [4, 6, 6, 6, 4, 4])):
            h, w = source.shape[-2:]
            cls_conv = model.head.classification_head.module_list[index]
            reg_conv = model.head.regression_head.module_list[index]
            raw_cls = cls_conv(source)[0]  # [k * 21, h, w]
            raw_reg = reg_conv(source)[0]  # [k * 4, h, w]
            for row in range(h):
                for col in range(w):
                    for box in range(k):
                        p = start + (row * w + col) * k + box
                        torch.testing.assert_close(
                            logits[0, p], raw_cls[box * 21 : (box + 1) * 21, row, col]
                        )
                        torch.testing.assert_close(
                            offsets[0, p], raw_reg[box * 4 : (box + 1) * 4, row, col]
                        )
            start += h * w * k
    assert logits.shape[1] == start


def test_priors_per_location_mismatch() -> None:
    with pytest.raises(ValueError, match="boxes per position"):
        SSDVGG16(21, [4, 4, 4, 4, 4, 4])


def test_summary(model: SSDVGG16, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dsod.apps.summary.build_model", lambda config: model)
    summary = model_summary(ssd_config())
    assert summary["priors"] == 8732
    assert summary["sources"][0] == [512, 38, 38] and summary["sources"][-1] == [256, 1, 1]
    assert 60 < summary["gflops"] < 70  # torchvision quotes 34.9 G multiply-adds (91 classes)


def test_one_training_step_is_finite(model: SSDVGG16) -> None:
    """Forward, MultiBox loss against matched targets, backward, SGD step, at the smallest
    input the network takes (268: maps 34, 17, 9, 5, 3, 1)."""
    torch.manual_seed(2)
    config = ssd_config(input_size=268)
    priors = build_priors(config)
    assert priors.feature_sizes == (34, 17, 9, 5, 3, 1)
    encoder = TargetEncoder(priors(), BoxCoder((0.1, 0.1, 0.2, 0.2)))
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.7], [0.4, 0.1, 0.9, 0.6]])
    target_offsets, target_labels = encoder(boxes, torch.tensor([3, 15]))
    model.train()
    images = torch.randn(1, 3, 268, 268) * 60
    logits, offsets = model(images)
    assert logits.shape == (1, priors.num_priors, 21)
    losses = MultiBoxLoss()(logits, offsets, target_offsets[None], target_labels[None])
    assert torch.isfinite(losses["loss"]) and losses["num_pos"] >= 2
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    optimizer.zero_grad()
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
