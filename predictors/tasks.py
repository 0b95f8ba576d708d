"""The task suite of ``predictor-protocol.md`` (N0, F0-F5) and user-defined tasks.

A task names a search space, the train devices (whose tables a method pretrains on) and the
test devices (new devices, k measurements each). The built-in tasks read both from HELP's
shipped tables; a user-defined task (name ``custom``) takes any train devices of a table and
any test table (for example your own devices' measurements).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from predictors.table_errors import LatencyTableError

if TYPE_CHECKING:
    import pandas as pd

# predictors.data (pandas) is imported where a table is read: `hwl evaluate --help` lists TASKS without it.

log = logging.getLogger(__name__)

_GPU_CARDS = ("1080ti", "2080ti", "titan_rtx", "titanx", "titanxp")


@dataclass(frozen=True)
class Task:
    """Train devices -> test devices in one search space.

    Parameters
    ----------
    name : str
        ``N0``, ``F0``..``F5`` or ``custom``.
    space : str
        ``nb201`` or ``fbnet``.
    train_devices, test_devices : tuple of str
        Device names; the train ones in the train table, the test ones in the test table.
    description : str
        One line for tables and ``--help``.
    """

    name: str
    space: str
    train_devices: tuple[str, ...]
    test_devices: tuple[str, ...]
    description: str = ""
    # None: both sides come from the shipped HELP table of the space.
    train_table: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    test_table: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        both = [d for d in self.test_devices if d in set(self.train_devices)]
        if both:  # the method pretrains on the device's own table: its score would be a leak
            raise LatencyTableError(f"{', '.join(map(repr, both))} cannot be both a train and a test device; "
                                    "drop it from --test-devices or from --train-devices")

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(train table, test table), each holding only the task's devices (checked)."""
        from predictors import data

        help_table = None
        if self.train_table is None or self.test_table is None:
            help_table = data.help_table(self.space)
        train = self.train_table if self.train_table is not None else help_table
        test = self.test_table if self.test_table is not None else help_table
        train = data.select_devices(train, self.train_devices)
        test = data.select_devices(test, self.test_devices)
        return train, test


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("N0", "nb201",
         ("1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r", "samsung_a50", "pixel3",
          "essential_ph_1", "samsung_s7"),
         ("titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss"),
         "NB201, HELP default split"),
    Task("F0", "fbnet",
         ("1080ti_1", "1080ti_32", "1080ti_64", "silver_4114", "silver_4210r", "samsung_a50", "pixel3",
          "essential_ph_1", "samsung_s7"),
         ("fpga", "raspi4", "eyeriss"),
         "FBNet, HELP default split"),
    Task("F1", "fbnet",
         ("2080ti_1", "essential_ph_1", "silver_4114", "titan_rtx_1", "titan_rtx_32"),
         ("eyeriss", "fpga", "raspi4", "samsung_a50", "samsung_s7"),
         "FBNet, mixed -> edge devices"),
    Task("F2", "fbnet",
         ("essential_ph_1", "gold_6226", "gold_6240", "pixel3", "raspi4"),
         ("1080ti_1", "1080ti_32", "2080ti_32", "titan_rtx_1", "titanxp_1"),
         "FBNet, CPUs and phones -> GPUs"),
    Task("F3", "fbnet",
         ("essential_ph_1", "pixel2", "pixel3", "raspi4", "samsung_s7"),
         ("1080ti_1", "1080ti_32", "2080ti_1", "titan_rtx_1", "titan_rtx_32"),
         "FBNet, phones -> GPUs"),
    Task("F4", "fbnet",
         ("1080ti_64", "2080ti_1", "eyeriss", "gold_6226", "gold_6240", "raspi4", "samsung_s7", "silver_4210r",
          "titan_rtx_1", "titan_rtx_32"),
         ("1080ti_1", "pixel2", "essential_ph_1"),
         "FBNet, mixed -> mixed"),
    Task("F5", "fbnet",
         tuple(f"{card}_{batch}" for card in _GPU_CARDS for batch in (1, 32, 64)),
         ("gold_6226", "essential_ph_1", "samsung_s7", "pixel2"),
         "FBNet adversarial: 15 GPUs -> CPU and phones"),
)}


def get_task(name: str) -> Task:
    """A built-in task by name; raises naming the valid ones."""
    try:
        return TASKS[name.upper() if isinstance(name, str) else name]
    except (KeyError, AttributeError):
        raise LatencyTableError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)} "
                                "(or give --train-devices and --test-table for a custom task)") from None


def custom_task(space: str, train_devices, test_table: pd.DataFrame, *, train_table: pd.DataFrame | None = None,
                test_devices=None, name: str = "custom") -> Task:
    """A user-defined task: ``train_devices`` of ``train_table`` (default: HELP's) -> ``test_table``.

    Every device of ``test_table`` but the train devices is a test device, unless ``test_devices``
    picks some; picking a train device is refused. Either way they are sorted by name: the trial's
    draws are numbered by device, so neither the table's row order nor the order ``test_devices``
    names them in may change a device's score.
    """
    from predictors import data

    if test_table is None or len(test_table) == 0:
        raise LatencyTableError("the test table is empty")
    train_table = data.help_table(space) if train_table is None else train_table
    train_devices = tuple(data.check_devices(train_table, train_devices, what="train device"))
    if test_devices is None:
        test_devices = _other_devices(test_table, train_devices)
    test_devices = tuple(sorted(data.check_devices(test_table, test_devices, what="test device")))
    return Task(name, space, train_devices, test_devices, "user-defined", train_table, test_table)


def _other_devices(test_table: pd.DataFrame, train_devices) -> list[str]:
    """The test table's devices that are not train devices; a train device found there is left out
    (said on stderr): a store or table often holds the train devices too, and scoring one is a leak."""
    from predictors import data

    devices = sorted(data.devices_of(test_table))
    left_out = [d for d in devices if d in train_devices]
    if left_out and len(left_out) == len(devices):
        raise LatencyTableError(f"the test table holds only train devices ({', '.join(left_out)}): give a "
                                "table of other devices, or other --train-devices")
    if left_out:
        log.warning("not scoring %s: a train device cannot also be a test device", ", ".join(left_out))
    return [d for d in devices if d not in train_devices]


__all__ = ["TASKS", "Task", "custom_task", "get_task"]
