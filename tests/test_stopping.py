from dsod.engine.bad_samples import BadSamples
from dsod.engine.stopping import NonFiniteLossError, NonFiniteSteps, too_many_bad_samples


def test_non_finite_steps_stop_the_run_only_in_a_row(tmp_path):
    steps = NonFiniteSteps(limit=2)
    assert steps.after_step(False, 1, tmp_path) is None
    assert steps.after_step(True, 2, tmp_path) is None  # a finite step resets the count
    assert steps.after_step(False, 3, tmp_path) is None
    error = steps.after_step(False, 4, tmp_path)
    assert isinstance(error, NonFiniteLossError) and "2 steps in a row" in str(error)


def test_the_stop_ends_with_the_runs_advice(tmp_path):
    steps = NonFiniteSteps(limit=1, advice="try a lower solver.lr (0.1 here)")
    assert str(steps.after_step(False, 7, tmp_path)).endswith("try a lower solver.lr (0.1 here).")


class _Split(list):
    left_out: list = []


def test_unreadable_samples_stop_the_run_only_after_a_pass(tmp_path):
    bad = BadSamples(_Split(range(10)), limit=0.1)
    bad.add([3, 4])
    assert too_many_bad_samples(bad, 9, 10, tmp_path) is None
    error = too_many_bad_samples(bad, 10, 10, tmp_path)
    assert error is not None and str(error).startswith("2 of the 10 training samples (20.0%)")
    assert str(tmp_path) in str(error)
