"""A small onboarding setting on HELP's NB201 tables, shared by the onboarding tests."""
from __future__ import annotations

import pytest

from predictors import data

TRAIN = ["1080ti_1", "silver_4114", "pixel3", "samsung_s7"]
N_ARCHS = 600


def small_nb201():
    """(train tables of 4 HELP devices, the 'new device' raspi4's table), on the first 600 NB201 archs."""
    table = data.help_table("nb201")
    table = table[table["arch"] < N_ARCHS]
    return data.by_device(table, TRAIN), data.by_device(table, ["raspi4"])["raspi4"]


@pytest.fixture(scope="module")
def small():
    """:func:`small_nb201` as a fixture (import it into a test module to use it)."""
    return small_nb201()
