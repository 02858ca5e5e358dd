"""--agent-cpu values: which CPU the agent's threads get, and what is refused."""

import pytest

from runtime.errors import InvalidParameterValue
from runtime.sandbox.placement import choose


def test_auto_takes_the_highest_allowed_cpu():
    assert choose("auto", frozenset({0, 1})) == 1
    assert choose("auto", frozenset({2, 5, 7})) == 7


def test_none_and_a_single_cpu_leave_threads_unpinned():
    assert choose("none", frozenset({0, 1, 2})) is None
    assert choose("auto", frozenset({3})) is None
    assert choose("3", frozenset({3})) is None   # nothing to choose between


def test_an_allowed_cpu_number_is_taken():
    assert choose("2", frozenset({0, 2, 4})) == 2


@pytest.mark.parametrize("value,words", [("9", "CPU 9 is not one this process may use"),
                                         ("one", "'one' is not a CPU"), ("", "'' is not a CPU")])
def test_other_values_are_refused_naming_what_is_allowed(value, words):
    with pytest.raises(InvalidParameterValue) as err:
        choose(value, frozenset({0, 2}))
    assert words in err.value.message and "auto, none or one of 0, 2" in err.value.message


def test_a_bad_value_is_refused_on_a_single_cpu_too():
    with pytest.raises(InvalidParameterValue) as err:
        choose("4", frozenset({3}))
    assert "CPU 4 is not one this process may use" in err.value.message
