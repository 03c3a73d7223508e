import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torchvision.ops import box_convert, box_iou

from dsod.box_coder import BoxCoder
from dsod.matching import IGNORE, TargetEncoder


def xyxy_to_cxcywh(b):
    b = torch.tensor(b, dtype=torch.float32)
    return torch.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1
    )


# Four priors (xyxy): A [0,0,.4,.4], B [.1,0,.5,.4], C [.6,.6,1,1], D [0,.6,.4,1]
PRIORS = xyxy_to_cxcywh([[0, 0, 0.4, 0.4], [0.1, 0, 0.5, 0.4], [0.6, 0.6, 1, 1], [0, 0.6, 0.4, 1]])


CODER = BoxCoder()


def test_matching_worked_by_hand():
    # g1 = [0,0,.4,.4] equals A (IoU 1); with B: inter .3*.4=.12, union .16+.16-.12=.2 -> .6
    # g2 = [.7,.7,1,1]: with C inter .09, union .16 -> .5625
    gts = torch.tensor([[0, 0, 0.4, 0.4], [0.7, 0.7, 1, 1]])
    offsets, labels = TargetEncoder(PRIORS, CODER)(gts, torch.tensor([3, 7]))
    assert labels.tolist() == [3, 3, 7, 0]
    # A, B and C carry the offsets of their ground truths; A's is the prior itself.
    torch.testing.assert_close(CODER.decode(offsets[:3], PRIORS[:3]), gts[[0, 0, 1]])
    assert offsets[0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert offsets[3].tolist() == [0.0, 0.0, 0.0, 0.0]  # background: no offsets


def test_every_ground_truth_keeps_a_prior_even_when_they_compete():
    # Both gts overlap prior A best: g1 = A exactly (IoU 1), g2 = [0,0,.3,.3] (IoU .5625 with A,
    # .3*.2/ (.09+.16-.06)= .06/.19 = .316 with B). Bipartite: g1 -> A, then g2 -> B.
    gts = torch.tensor([[0, 0, 0.4, 0.4], [0, 0, 0.3, 0.3]])
    offsets, labels = TargetEncoder(PRIORS, CODER, match_iou=0.9)(gts, torch.tensor([1, 2]))
    assert labels.tolist() == [1, 2, 0, 0]
    torch.testing.assert_close(CODER.decode(offsets[1:2], PRIORS[1:2]), gts[1:])


def test_ignore_band_between_neg_iou_and_match_iou():
    gts = torch.tensor([[0, 0, 0.4, 0.4]])
    _, labels = TargetEncoder(PRIORS, CODER, match_iou=0.7, neg_iou=0.5)(gts, torch.tensor([1]))
    # A is the forced best (1.0), B has .6: ignored, C and D have 0: background.
    assert labels.tolist() == [1, IGNORE, 0, 0]


def test_no_ground_truth_means_all_background():
    offsets, labels = TargetEncoder(PRIORS, CODER)(
        torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    )
    assert labels.tolist() == [0, 0, 0, 0]
    assert offsets.shape == (4, 4) and not offsets.any()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 0.8), st.floats(0, 0.8), st.floats(0.05, 0.2), st.floats(0.05, 0.2)
        ),
        min_size=1,
        max_size=12,
    )
)
def test_property_every_gt_keeps_a_prior_and_targets_decode_back(raw):
    grid = torch.linspace(0.05, 0.95, 10)
    cy, cx = torch.meshgrid(grid, grid, indexing="ij")
    priors = torch.stack(
        [cx.flatten(), cy.flatten(), torch.full((100,), 0.15), torch.full((100,), 0.15)], 1
    )
    gts = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in raw])
    labels = torch.arange(1, len(raw) + 1)
    # Bipartite matching can serve every ground truth when each overlaps enough priors.
    overlaps = (box_iou(gts, box_convert(priors, "cxcywh", "xyxy")) > 0).sum(1)
    assume(bool((overlaps >= len(raw)).all()))
    coder = BoxCoder()
    offsets, prior_labels = TargetEncoder(priors, coder)(gts, labels)
    assert set(prior_labels[prior_labels > 0].tolist()) == set(labels.tolist())
    positive = prior_labels > 0
    decoded = coder.decode(offsets[positive], priors[positive])
    torch.testing.assert_close(decoded, gts[prior_labels[positive] - 1], atol=1e-5, rtol=1e-5)
