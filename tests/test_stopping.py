from dsod.engine.bad_samples import BadSamples
from dsod.engine.stopping import NonFiniteLossError, NonFiniteSteps, too_many_bad_samples


def test_non_finite_steps_stop_the_run_only_in_a_row(tmp_path):
    steps = NonFiniteSteps(limit=2)
    assert steps.after_step(False, 1, tmp_path) is None
    assert steps.after_step(True, 2, tmp_path) is None  # a finite step resets the count
    assert steps.after_step(False, 3, tmp_path) is None
    error = steps.after_step(False, 4, tmp_path)
    assert isinstance(error, NonFiniteLossError) and "2 steps in a row" in str(error)


def test_the_stop_names_the_scales_rate_only_where_they_learn_at_their_own(tmp_path):
    plain, own = NonFiniteSteps(limit=1), NonFiniteSteps(limit=1, l2norm_lr=12.5)
    assert "l2norm_lr" not in str(plain.after_step(False, 7, tmp_path))
    assert "a lower solver.l2norm_lr (12.5 here)" in str(own.after_step(False, 7, tmp_path))


class _Split(list):
    left_out: list = []


def test_unreadable_samples_stop_the_run_only_after_a_pass(tmp_path):
    bad = BadSamples(_Split(range(10)), limit=0.1)
    bad.add([3, 4])
    assert too_many_bad_samples(bad, 9, 10, tmp_path) is None
    error = too_many_bad_samples(bad, 10, 10, tmp_path)
    assert error is not None and str(error).startswith("2 of the 10 training samples (20.0%)")
    assert str(tmp_path) in str(error)
