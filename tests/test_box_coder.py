import torch
from hypothesis import given, settings, strategies as st

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
@given(st.lists(st.floats(0.0, 0.9), min_size=2, max_size=2),
       st.lists(st.floats(0.01, 0.5), min_size=2, max_size=2),
       st.lists(st.floats(0.05, 0.9), min_size=4, max_size=4))
def test_encode_decode_round_trip(corner, size, prior):
    coder = BoxCoder()
    box = torch.tensor([[corner[0], corner[1], corner[0] + size[0], corner[1] + size[1]]],
                       dtype=torch.float64)
    priors = torch.tensor([prior], dtype=torch.float64)
    decoded = coder.decode(coder.encode(box, priors), priors)
    torch.testing.assert_close(decoded, box)


def test_decode_stays_finite_for_huge_offsets():
    coder = BoxCoder()
    out = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), torch.tensor([[0.5, 0.5, 0.1, 0.1]]))
    assert torch.isfinite(out).all()
