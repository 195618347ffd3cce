"""How durations read in the dashboard and in figure titles."""

import pytest

from hpcopt.core.text import duration

DURATIONS = [(-3, "0 s"), (119, "119 s"), (120, "2 min"), (7199, "120 min"), (7200, "2.0 h"),
             (172800, "2.0 d")]  # fmt: skip


@pytest.mark.parametrize(("seconds", "text"), DURATIONS)
def test_duration_takes_the_largest_unit_that_leaves_two_of_it(seconds, text):
    assert duration(seconds) == text


def test_duration_to_significant_digits():
    assert duration(450, significant=3) == "7.5 min"
    assert duration(7300, significant=3) == "2.03 h"
