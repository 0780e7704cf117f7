"""The sequence of outbound events: larger per object whatever the instances' clocks say."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync_core.store.records import SequenceClock


def fixed(*readings: int) -> SequenceClock:
    """A clock whose wall time (in ns) reads ``readings`` one after the other."""
    values = iter(readings)
    return SequenceClock(lambda: next(values))


def test_numbers_follow_the_wall_clock_in_microseconds() -> None:
    clock = fixed(1_000_000_000, 3_000_000_000)
    assert [clock.next(), clock.next()] == [1_000_000, 3_000_000]


def test_a_clock_that_stands_still_or_goes_back_still_counts_up() -> None:
    clock = fixed(5_000_000, 5_000_000, 1_000_000)
    assert [clock.next(), clock.next(), clock.next()] == [5_000, 5_001, 5_002]


def test_an_object_s_next_number_is_past_its_last_even_from_a_slower_instance() -> None:
    fast, slow = fixed(9_000_000_000), fixed(2_000_000_000)
    first = fast.next()
    assert slow.next(after=first) == first + 1


def test_numbers_from_the_old_counter_stay_older() -> None:
    assert fixed(1_700_000_000_000_000_000).next(after=2**31) > 2**31


@given(
    readings=st.lists(st.integers(min_value=0, max_value=2**62), min_size=1, max_size=50),
    floors=st.lists(st.integers(min_value=0, max_value=2**52), min_size=50, max_size=50),
)
def test_every_number_is_larger_than_the_last_and_than_its_floor(
    readings: list[int], floors: list[int]
) -> None:
    clock = fixed(*readings)
    last = 0
    for _, floor in zip(readings, floors, strict=False):
        number = clock.next(after=floor)
        assert number > last and number > floor
        last = number
