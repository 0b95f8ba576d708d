"""A table that names each architecture twice (an NB201 index and its arch string, an FBNet key and
its op-index key) must name the same one in both columns; which one is right is the user's call.

Shared by ``harness.importers`` and ``predictors.data``, each of which wraps the ``ArchError`` in
its own error type. Plain Python and numpy, as the rest of ``spaces``.
"""
from __future__ import annotations

import numpy as np

from spaces import fbnet, nb201
from spaces.errors import ArchError

# The two columns of each space that name an architecture on their own, as public tables give them.
PAIRED_COLUMNS = {"nb201": ("arch_index", "arch_str"), "fbnet": ("arch_ops", "op_idx_key")}


def check_same_archs(space: str, keys, values) -> None:
    """Raise ``ArchError`` unless ``values`` (the second column of ``PAIRED_COLUMNS[space]``) names in every
    row the architecture ``keys`` (canonical keys read from the first) does. Rows are counted from 1, as data rows."""
    resolve = nb201.resolve if space == "nb201" else fbnet.canonical
    first, second = PAIRED_COLUMNS[space]
    keys = list(keys)
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    key_of: dict = {}
    differ = []
    for row, (key, value) in enumerate(zip(keys, values), start=1):
        if _empty(value):
            raise ArchError(f"data row {row}: {second} is empty; fill it or drop the column")
        if value not in key_of:  # each distinct value parsed once: HELP's long tables repeat them per device
            try:
                key_of[value] = resolve(value)
            except (ArchError, ValueError, TypeError) as exc:
                raise ArchError(f"data row {row}: {second} {value!r}: {exc}") from None
        if str(key_of[value]) != str(key):
            differ.append(row)
    if differ:
        row = differ[0]
        value = values[row - 1]
        other = key_of[value]
        key = keys[row - 1]
        what, key, named = (("cells", key, f"index {other}") if space == "nb201"
                            else ("architectures", repr(key), repr(other)))
        raise ArchError(f"{len(differ)} row(s) whose {first} and {second} name different {what} (first at data row "
                        f"{row}: {first} {key}, {second} {value!r} is {named}); fix them or drop one of the columns")


def _empty(value) -> bool:
    """An empty cell: None, NaN (pandas 3 keeps one through astype(str)), pandas' NA, or blank text."""
    if isinstance(value, str):
        return not value.strip()
    try:
        return value is None or bool(value != value)  # NaN is the one value unequal to itself
    except TypeError:  # pandas' NA: its comparisons are NA, whose truth value is refused
        return True
