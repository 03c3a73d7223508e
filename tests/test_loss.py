import math

import torch

from dsod.loss import MultiBoxLoss


def test_no_ground_truth_gives_zero_box_loss_and_finite_total():
    logits = torch.randn(2, 10, 4, requires_grad=True)
    offsets = torch.randn(2, 10, 4, requires_grad=True)
    out = MultiBoxLoss()(
        logits, offsets, torch.zeros(2, 10, 4), torch.zeros(2, 10, dtype=torch.long)
    )
    assert out["loc_loss"].item() == 0.0
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all()


def test_one_ground_truth_worked_by_hand():
    # 5 priors, prior 0 positive (class 1), all others background.
    logits = torch.zeros(1, 5, 3)
    logits[0, 1, 0] = 5.0  # an easy negative
    logits[0, 2, 2] = 5.0  # a hard negative
    logits[0, 3, 1] = 1.0  # a less hard negative
    labels = torch.tensor([[1, 0, 0, 0, 0]])
    offsets = torch.tensor([[[0.5, 0.0, 0.0, 2.0]] + [[0.0] * 4] * 4])
    targets = torch.zeros(1, 5, 4)
    out = MultiBoxLoss(neg_pos_ratio=2)(logits, offsets, targets, labels)
    # Box: smooth-L1(0.5) = 0.5*0.25 = 0.125; smooth-L1(2) = 2 - 0.5 = 1.5; / 1 positive.
    assert math.isclose(out["loc_loss"].item(), 1.625, rel_tol=1e-6)
    # Conf: positive: -log(1/3); negatives: 2 hardest background losses: prior 2 and prior 3.
    ce_pos = math.log(3)
    ce_2 = -math.log(1 / (2 + math.exp(5)))
    ce_3 = -math.log(1 / (2 + math.e))
    assert math.isclose(out["conf_loss"].item(), ce_pos + ce_2 + ce_3, rel_tol=1e-5)
    assert out["loc_loss"] > 0 and out["conf_loss"] > 0


def test_ignored_priors_never_count():
    logits = torch.zeros(1, 4, 2)
    logits[0, 1, 1] = 9.0  # would be the hardest negative, but it is ignored
    labels = torch.tensor([[1, -1, 0, 0]])
    out = MultiBoxLoss(neg_pos_ratio=1)(logits, torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), labels)
    assert math.isclose(out["conf_loss"].item(), 2 * math.log(2), rel_tol=1e-6)


def test_negatives_are_mined_per_image():
    # Image 0 has one positive, image 1 none: image 1 contributes no negatives.
    logits = torch.zeros(2, 3, 2)
    logits[1, :, 1] = 9.0
    labels = torch.tensor([[1, 0, 0], [0, 0, 0]])
    out = MultiBoxLoss(neg_pos_ratio=3)(logits, torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), labels)
    assert math.isclose(out["conf_loss"].item(), 3 * math.log(2), rel_tol=1e-6)
