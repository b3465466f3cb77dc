"""HMM lengths are whole numbers of steps: fractions and booleans are refused, never truncated."""

import numpy as np
import pytest

from emvi.errors import DataError
from emvi.estimators import HMM


@pytest.mark.parametrize("lengths", [[10, 2.5], np.array([True, True]), [10.0, 3.5]])
def test_fractional_or_boolean_lengths_are_refused(lengths):
    x = np.random.default_rng(0).normal(size=(2, 10, 1))
    with pytest.raises(DataError, match="whole numbers"):
        HMM(2, max_iter=2).fit(x, np.asarray(lengths))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 3 iterations on purpose
def test_whole_float_lengths_are_read_as_steps():
    x = np.random.default_rng(0).normal(size=(2, 10, 1))
    a = HMM(2, max_iter=3, tol=0.0).fit(x, np.array([10.0, 4.0]))
    b = HMM(2, max_iter=3, tol=0.0).fit(x, np.array([10, 4]))
    assert a.score(x, np.array([10, 4])) == b.score(x, np.array([10, 4]))
