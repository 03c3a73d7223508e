import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsod.box_coder import BoxCoder


def test_encode_by_hand():
    coder = BoxCoder([0.1, 0.1, 0.2, 0.2])
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    box = torch.tensor([[0.42, 0.3, 0.62, 0.9]])  # centre (0.52, 0.6), size (0.2, 0.6)
    # tx = 0.02 / 0.2 / 0.1 = 1; ty = 0.1 / 0.4 / 0.1 = 2.5; tw = log(1)/0.2 = 0;
    # th = log(1.5) / 0.2
    expected = torch.tensor([[1.0, 2.5, 0.0, torch.log(torch.tensor(1.5)).item() / 0.2]])
    torch.testing.assert_close(coder.encode(box, prior), expected)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 0.9), min_size=2, max_size=2),
    st.lists(st.floats(0.01, 0.5), min_size=2, max_size=2),
    st.lists(st.floats(0.05, 0.9), min_size=4, max_size=4),
)
def test_encode_decode_round_trip(corner, size, prior):
    coder = BoxCoder()
    box = torch.tensor(
        [[corner[0], corner[1], corner[0] + size[0], corner[1] + size[1]]], dtype=torch.float64
    )
    priors = torch.tensor([prior], dtype=torch.float64)
    decoded = coder.decode(coder.encode(box, priors), priors)
    torch.testing.assert_close(decoded, box)


def test_decode_by_hand():
    coder = BoxCoder([0.1, 0.1, 0.2, 0.2])
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    # centre 0.5 + 1 * 0.1 * 0.2 = 0.52 and 0.5 + 2.5 * 0.1 * 0.4 = 0.6; width 0.2 * e^0,
    # height 0.4 * e^(0.2 * log(1.5) / 0.2) = 0.6: the box of test_encode_by_hand
    offsets = torch.tensor([[1.0, 2.5, 0.0, math.log(1.5) / 0.2]])
    torch.testing.assert_close(
        coder.decode(offsets, prior), torch.tensor([[0.42, 0.3, 0.62, 0.9]])
    )


def test_decode_clamps_huge_log_scales_at_1000_over_16():
    coder = BoxCoder()
    prior = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    out = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), prior)
    # exp(0.2 * 1e4) would overflow; the scale stops at 1000 / 16 = 62.5: half side 3.125
    torch.testing.assert_close(
        out, torch.tensor([[0.5 - 3.125, 0.5 - 3.125, 0.5 + 3.125, 0.5 + 3.125]])
    )
    # below the clamp the scale is exp(0.2 * t): t = 5 gives e, half side 0.05 * e
    half = 0.05 * math.e
    torch.testing.assert_close(
        coder.decode(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), prior),
        torch.tensor([[0.5 - half, 0.5 - half, 0.5 + half, 0.5 + half]]),
    )
