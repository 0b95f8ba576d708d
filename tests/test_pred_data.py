"""Latency tables in one shape: shipped HELP tables, user files, harness stores, bad input."""
from __future__ import annotations

import importlib.util
import logging
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictors import data
from predictors.data import LatencyTableError
from spaces import fbnet, nb201
from spaces.errors import ArchError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
INDEX0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def test_help_tables_are_shipped_whole():
    nb = data.help_table("nb201")
    assert list(nb.columns) == list(data.COLUMNS)
    assert len(nb) == 15625 * 27 and nb["device"].nunique() == 27
    assert nb["arch"].dtype == np.int64 and nb["arch"].min() == 0 and nb["arch"].max() == 15624
    fb = data.help_table("fbnet")
    assert len(fb) == 5000 * 27 and fb["arch"].nunique() == 5000
    assert fbnet.canonical(fb["arch"].iloc[0]) == fb["arch"].iloc[0]
    # the README's sanity number: gold_6226 idx 3456 = 14.324 ms
    row = nb[(nb["device"] == "gold_6226") & (nb["arch"] == 3456)]
    assert row["latency_ms"].iloc[0] == pytest.approx(14.324, abs=1e-3)


def test_shipped_table_equals_shared_reference():
    if not (SHARED / "fbnet_latency.parquet").is_file():
        pytest.skip("../shared/data not present")
    ref = pd.read_parquet(SHARED / "fbnet_latency.parquet")
    ours = data.help_table("fbnet")
    np.testing.assert_array_equal(ours["latency_ms"].to_numpy(), ref["latency_ms"].to_numpy())
    assert ours["arch"].tolist()[:5] == ref["arch_ops"].astype(str).tolist()[:5]


def test_help_devices_lists_roles():
    devices = data.help_devices("nb201")
    assert len(devices) == 27 and "help_role" in devices.columns


def test_user_csv_with_arch_strings_resolves_indices(tmp_path):
    path = tmp_path / "mine.csv"
    pd.DataFrame({"arch_str": [INDEX0, nb201.to_string(7), INDEX0], "device": ["pi", "pi", "pi"],
                  "latency_ms": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    table = data.read_table(path, "nb201")
    # repeated (arch, device) rows reduce to their median
    assert sorted(zip(table["arch"], table["latency_ms"])) == [(0, 2.0), (7, 2.0)]
    assert set(table["source"]) == {"mine.csv"}


def test_a_file_with_repeated_archs_says_how_many_it_reduced(tmp_path, caplog):
    """23 rows of 20 archs (3 pasted twice at other latencies) adapted 'with 20 measurements' and no word of
    the 3 medians; a store's repeats (an arch measured again) stay quiet."""
    path = tmp_path / "my_pi.csv"
    rows = [(a, "my_pi", 1.0 + a) for a in range(20)] + [(a, "my_pi", 9.0) for a in (3, 5, 7)] + [(3, "x", 2.0)]
    pd.DataFrame(rows, columns=["arch_index", "device", "latency_ms"]).to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="predictors.data"):
        table = data.read_table(path, "nb201")
    assert len(table) == 21 and table.set_index(["device", "arch"]).loc[("my_pi", 3), "latency_ms"] == 6.5
    line = (f"{path}: 3 architectures appear on more than one row of a device (my_pi 3); each is taken at the "
            "median of its rows' latencies")
    assert [r.getMessage() for r in caplog.records] == [line]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="predictors.data"):
        data.from_frame(pd.read_csv(path), "nb201", where="store lab.db")
    assert not caplog.records


def test_user_parquet_fbnet_op_index_keys(tmp_path):
    keys = fbnet.sample(3, seed=1)
    path = tmp_path / "fb.parquet"
    pd.DataFrame({"op_idx_key": [fbnet.to_idx_key(fbnet.parse(k)) for k in keys], "device": "d",
                  "latency_ms": [1.0, 2.0, 3.0]}).to_parquet(path)
    assert data.read_table(path, "fbnet")["arch"].tolist() == keys


def test_one_device_file_without_device_column(tmp_path):
    path = tmp_path / "pi.csv"
    pd.DataFrame({"arch_index": [1, 2], "latency_ms": [1.0, 2.0]}).to_csv(path, index=False)
    with pytest.raises(LatencyTableError, match="device"):
        data.read_table(path, "nb201")
    assert set(data.read_table(path, "nb201", device="pi")["device"]) == {"pi"}


@pytest.mark.parametrize("frame, match", [
    (pd.DataFrame({"arch_index": [1], "latency_ms": [1.0]}), "lacks column.*device"),
    (pd.DataFrame({"device": ["d"], "latency_ms": [1.0]}), "arch_index or arch_str"),
    (pd.DataFrame({"arch_index": [], "device": [], "latency_ms": []}), "no rows"),
    (pd.DataFrame({"arch_index": [1, 2], "device": ["d", "d"], "latency_ms": [1.0, -2.0]}), "not positive"),
])
def test_bad_tables_are_named(tmp_path, frame, match):
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(LatencyTableError, match=match):
        data.read_table(path, "nb201")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(LatencyTableError, match="does not exist"):
        data.read_table(tmp_path / "nope.csv", "nb201")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(LatencyTableError, match="unknown format"):
        data.read_table(tmp_path / "t.txt", "nb201")


def test_key_from_the_wrong_space_says_so(tmp_path):
    path = tmp_path / "fb.csv"
    pd.DataFrame({"arch": [fbnet.sample(1, 0)[0]], "device": ["d"], "latency_ms": [1.0]}).to_csv(path, index=False)
    with pytest.raises(ArchError, match="not a nb201 architecture.*looks like a fbnet architecture"):
        data.read_table(path, "nb201")
    path = tmp_path / "nb.csv"
    pd.DataFrame({"arch_str": [INDEX0], "device": ["d"], "latency_ms": [1.0]}).to_csv(path, index=False)
    with pytest.raises(ArchError, match="not a fbnet architecture.*looks like a nb201 architecture"):
        data.read_table(path, "fbnet")


def test_arch_index_and_arch_str_naming_different_cells_are_refused(tmp_path):
    """A measurements file with both NB201 columns: a contradicting arch_str was ignored (arch_index taken)."""
    path = tmp_path / "mine.csv"
    pd.DataFrame({"arch_index": [3, 4], "arch_str": [nb201.to_string(3), nb201.to_string(40)], "device": ["pi", "pi"],
                  "latency_ms": [2.0, 5.0]}).to_csv(path, index=False)
    with pytest.raises(LatencyTableError, match=r"1 row\(s\) whose arch_index and arch_str name different cells "
                                                r"\(first at data row 2: arch_index 4, arch_str '.*' is index 40\)"):
        data.read_table(path, "nb201")
    pd.DataFrame({"arch_index": [3, 40], "arch_str": [nb201.to_string(3), nb201.to_string(40)], "device": ["pi", "pi"],
                  "latency_ms": [2.0, 5.0]}).to_csv(path, index=False)
    assert data.read_table(path, "nb201")["arch"].tolist() == [3, 40]


def test_unknown_device_lists_valid_ones():
    table = data.help_table("fbnet")
    with pytest.raises(LatencyTableError, match=r"unknown device 'my_pi'; valid devices: 1080ti_1, 1080ti_32"):
        data.select_devices(table, ["pixel2", "my_pi"])
    series = data.by_device(table, ["pixel2", "raspi4"])
    assert list(series) == ["pixel2", "raspi4"] and len(series["raspi4"]) == 5000
    assert series["raspi4"].index.is_unique


def test_a_device_name_that_only_looks_the_same_is_named_as_the_table_has_it(tmp_path):
    """A file's NFD name (macOS) or one with a trailing space was refused as
    "unknown device 'Pixel-ü'; valid devices: Pixel-ü"."""
    nfd = unicodedata.normalize("NFD", "Pixel-ü")
    table = pd.DataFrame({"arch": [1, 2, 3, 4], "device": [nfd, nfd, "my_pi ", "my_pi "], "latency_ms": [1.0] * 4})
    with pytest.raises(LatencyTableError, match=r"unknown device 'Pixel-ü'; the table's 'Pixel-u\\u0308' differs "
                                                r"from 'Pixel-ü' only in case, spaces or Unicode form"):
        data.check_devices(table, ["Pixel-ü"])
    with pytest.raises(LatencyTableError, match=r"the table's 'my_pi ' differs from 'MY_PI'"):
        data.by_device(table, ["MY_PI"])
    assert list(data.by_device(table, [nfd, "my_pi "])) == [nfd, "my_pi "]


def test_a_device_named_na_is_a_name_and_a_missing_one_is_refused(tmp_path):
    """pandas read 'NA' as a missing cell and kept it missing through astype(str): the device was NaN and
    `hwl adapt --device NA` ended in a TypeError traceback (joining the valid names)."""
    (tmp_path / "na.csv").write_text("arch_index,device,latency_ms\n1,NA,2.0\n2,NA,3.0\n")
    assert data.by_device(data.read_table(tmp_path / "na.csv", "nb201"), ["NA"])["NA"].tolist() == [2.0, 3.0]
    (tmp_path / "gap.csv").write_text("arch_index,device,latency_ms\n1,pi,2.0\n2,,3.0\n")
    with pytest.raises(LatencyTableError, match=r"gap.csv: 1 row\(s\) have no device \(first at data row 2\)"):
        data.read_table(tmp_path / "gap.csv", "nb201")
    pd.DataFrame({"arch_index": [1, 2], "device": ["pi", None], "latency_ms": [1.0, 2.0]}).to_parquet(
        tmp_path / "gap.parquet")
    with pytest.raises(LatencyTableError, match=r"gap.parquet: 1 row\(s\) have no device"):
        data.read_table(tmp_path / "gap.parquet", "nb201")


def test_devices_may_cover_different_archs():
    table = pd.DataFrame({"arch": [0, 1, 2, 5], "device": ["a", "a", "b", "b"], "latency_ms": [1.0, 2, 3, 4],
                          "source": "x"})
    series = data.by_device(table)
    assert series["a"].index.tolist() == [0, 1] and series["b"].index.tolist() == [2, 5]


@pytest.mark.skipif(importlib.util.find_spec("harness.store") is None, reason="harness.store not there yet")
def test_table_from_a_harness_store(tmp_path):
    from harness.importers import import_file
    from harness.store import Store

    csv = tmp_path / "pi.csv"
    pd.DataFrame({"arch_index": [3, 4, 5], "device": "my_pi", "latency_ms": [1.5, 2.5, 3.5]}).to_csv(csv, index=False)
    store = Store(tmp_path / "lab.db")
    import_file(store, csv, space="nb201")
    store.close()
    table = data.load_table("nb201", store=tmp_path / "lab.db")
    assert sorted(zip(table["arch"], table["latency_ms"])) == [(3, 1.5), (4, 2.5), (5, 3.5)]
    assert table["source"].iloc[0].startswith("imported:")
    with pytest.raises(LatencyTableError, match="holds no fbnet latencies"):
        data.load_table("fbnet", store=tmp_path / "lab.db")
    with pytest.raises(LatencyTableError, match="does not exist"):
        data.load_table("nb201", store=tmp_path / "missing.db")


def test_arch_ops_and_op_idx_key_naming_different_architectures_are_refused(tmp_path):
    """An FBNet table with both key columns: arch_ops was taken and a contradicting op_idx_key ignored."""
    keys = fbnet.sample(2, 0)
    idx = [fbnet.to_idx_key(fbnet.parse(k)) for k in keys]
    path = tmp_path / "mine.csv"
    pd.DataFrame({"arch_ops": keys, "op_idx_key": idx[::-1], "device": "pi", "latency_ms": [2.0, 5.0]}).to_csv(path)
    with pytest.raises(LatencyTableError, match=r"2 row\(s\) whose arch_ops and op_idx_key name different "
                                                r"architectures \(first at data row 1: arch_ops 'k"):
        data.read_table(path, "fbnet")
    pd.DataFrame({"arch_ops": keys, "op_idx_key": idx, "device": "pi", "latency_ms": [2.0, 5.0]}).to_csv(path)
    assert data.read_table(path, "fbnet")["arch"].tolist() == keys


def test_a_bad_latency_is_named_by_its_data_row(tmp_path):
    """The row was counted from 0: the second data row of a CSV (its third line) was 'first at row 1'."""
    (tmp_path / "bad.csv").write_text("arch_index,device,latency_ms\n1,pi,2.0\n2,pi,-3.0\n3,pi,x\n")
    with pytest.raises(LatencyTableError, match=r"bad.csv: 2 latency_ms value\(s\) are not positive numbers "
                                                r"\(first at data row 2: '-3.0'\)"):
        data.read_table(tmp_path / "bad.csv", "nb201")


@pytest.mark.parametrize("header, sep, hint", [
    ("arch_index;device;latency_ms", ";", "(a file separated by semicolons? hwl reads comma-separated CSV)"),
    ("arch_index\tdevice\tlatency_ms", "\t", "(a file separated by tabs? hwl reads comma-separated CSV)"),
    ("arch_index,device,latency_ms ", ",", "('latency_ms ': rename to the lower-case name without spaces)"),
    ("arch_index,device,Latency_ms", ",", "('Latency_ms': rename to the lower-case name without spaces)")])
def test_a_header_that_only_looks_right_says_why_its_columns_are_not_found(tmp_path, header, sep, hint):
    """A spreadsheet's ';'-separated export, or a name with a trailing space, listed the columns the file 'has' as
    the very names it 'lacks' ('lacks column(s) latency_ms; it has ..., latency_ms ')."""
    (tmp_path / "mine.csv").write_text(f"{header}\n1{sep}pi{sep}2.5\n")
    with pytest.raises(LatencyTableError, match="lacks column") as refused:
        data.read_table(tmp_path / "mine.csv", "nb201", device="pi")
    assert str(refused.value).endswith(hint)


def test_a_zero_latency_of_a_numeric_column_is_named_as_the_file_has_it(tmp_path):
    """A CSV whose latency_ms column reads as numbers named its zero 'np.float64(0.0)' (numpy 2's repr)."""
    (tmp_path / "zero.csv").write_text("arch_index,device,latency_ms\n1,pi,2.0\n2,pi,0\n3,pi,inf\n")
    with pytest.raises(LatencyTableError, match=r"zero.csv: 2 latency_ms value\(s\) are not positive numbers "
                                                r"\(first at data row 2: 0.0\)$"):
        data.read_table(tmp_path / "zero.csv", "nb201")


def test_an_arch_index_column_read_as_floats_is_read_as_indices_and_an_empty_cell_is_named(tmp_path):
    """A Parquet arch_index column with a null (or written as floats) reads as floats: hwl adapt refused index
    1.0 as "'1.0' is not a nb201 architecture", which hwl data import took, and named an empty cell nan."""
    pd.DataFrame({"arch_index": [1.0, 2.0], "device": "pi", "latency_ms": [1.0, 2.0]}).to_parquet(tmp_path / "f.pq")
    assert data.read_table(tmp_path / "f.pq", "nb201")["arch"].tolist() == [1, 2]
    pd.DataFrame({"arch_index": [1, None, 3], "device": "pi", "latency_ms": [1.0, 2.0, 3.0]}).to_parquet(
        tmp_path / "gap.parquet")
    pd.DataFrame({"arch_str": [nb201.to_string(5), None], "device": "pi", "latency_ms": [1.0, 2.0]}).to_parquet(
        tmp_path / "strs.parquet")
    (tmp_path / "gap.csv").write_text("arch_index,device,latency_ms\n1,pi,1.0\n ,pi,2.0\n")
    for name, column in (("gap.parquet", "arch_index"), ("strs.parquet", "arch_str"), ("gap.csv", "arch_index")):
        with pytest.raises(ArchError, match=rf"/{name}, column {column}: 1 row\(s\) have no architecture \(first at "
                                            r"data row 2\); fill the column or remove the row$"):
            data.read_table(tmp_path / name, "nb201")
    pd.DataFrame({"arch_index": [1.5], "device": "pi", "latency_ms": [1.0]}).to_parquet(tmp_path / "half.pq")
    with pytest.raises(ArchError, match=r"1.5 is not a nb201 architecture"):  # not a whole number: still refused
        data.read_table(tmp_path / "half.pq", "nb201")


def test_a_wide_table_written_with_pandas_row_index_reads_as_without_it(tmp_path, caplog):
    """`DataFrame.to_csv` without index=False writes the row numbers under an empty header, which pandas reads back
    as 'Unnamed: 0': a wide table read it as a device of latencies 0, 1, ... and `hwl adapt`, `hwl evaluate` and
    `hwl data import` refused the file ('1 latency_ms value(s) are not positive numbers (first at data row 1: 0.0)'),
    naming neither the column nor a cell of its own device. The column names no device and is left out."""
    wide = pd.DataFrame({"arch_index": [5, 3, 9], "pi": [2.0, 1.0, 3.0], "nano": [0.5, 0.4, None]})
    wide.to_csv(tmp_path / "plain.csv", index=False)
    wide.to_csv(tmp_path / "indexed.csv")
    with caplog.at_level(logging.WARNING, logger="harness.export_tables"):
        indexed = data.read_table(tmp_path / "indexed.csv", "nb201")
    pd.testing.assert_frame_equal(indexed.drop(columns="source"),
                                  data.read_table(tmp_path / "plain.csv", "nb201").drop(columns="source"))
    assert sorted(zip(indexed["device"], indexed["arch"], indexed["latency_ms"])) == [
        ("nano", 3, 0.4), ("nano", 5, 0.5), ("pi", 3, 1.0), ("pi", 5, 2.0), ("pi", 9, 3.0)]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'indexed.csv'}: 1 column without a header ('Unnamed: 0') names no device: read as a row index "
        "(pandas' to_csv writes one unless index=False), not as latencies"]


@pytest.mark.parametrize("csv, says", [
    # The wide table's cells were checked as a long table, numbered column after column: a 'notes' column's 'ok' in
    # the file's row 2 was 'latency_ms ... first at data row 5'. The column and the file's row are named.
    ("arch_index,pi,notes\n1,2.0,\n2,3.0,ok\n3,4.0,fine\n",
     "column 'notes' is read as a device's latencies (a wide table: one column per device), but 2 values are not "
     "positive numbers (first at data row 2: 'ok'); remove a column that holds no latencies"),
    # A FLOPs count under a name of no known quantity ('m') read as a device of latencies of 10^7 ms.
    ("arch_index,pi,m\n1,2.0,12000000\n2,3.0,\n3,4.0,900000\n",
     "column 'm' is read as a device's latencies (a wide table: one column per device), but it holds whole numbers "
     "up to 12,000,000, no latencies in ms (a count such as FLOPs or params, or a time in ns); drop it from the "
     "file, or give latencies in ms"),
])
def test_a_wide_tables_column_of_no_latencies_is_named(tmp_path, csv, says):
    path = tmp_path / "wide.csv"
    path.write_text(csv)
    with pytest.raises(LatencyTableError) as refused:
        data.read_table(path, "nb201")
    assert str(refused.value) == f"{path}: {says}"


def test_a_table_of_ones_own_with_two_batch_sizes_of_a_device_is_refused(tmp_path):
    """hwl's exports are refused when a device's latencies come from two settings, but a table of one's own (or an
    export whose label_ms was renamed latency_ms) with a batch_size column of 1 and 8 was read as one device: on
    disjoint archs its batch 1 and batch 8 timings were fitted as one table, without a word."""
    path = tmp_path / "mine.csv"
    pd.DataFrame({"arch_index": [1, 2, 3, 4], "device": "pi", "latency_ms": [1.0, 2.0, 8.0, 16.0],
                  "batch_size": [1, 1, 8, 8]}).to_csv(path, index=False)
    with pytest.raises(LatencyTableError) as refused:
        data.read_table(path, "nb201")
    assert str(refused.value) == ("mine.csv holds pi's latencies measured with 2 different settings: 2 with "
                                  "batch_size = 1; 2 with batch_size = 8; their median would mix them, so keep one "
                                  "setting's rows, or give each setting its own device name")
    one = pd.read_csv(path).query("batch_size == 1").drop(columns="device")
    one.to_csv(path, index=False)  # one setting, a one-device file named by the caller: read as it is
    assert data.read_table(path, "nb201", device="pi")["latency_ms"].tolist() == [1.0, 2.0]


def test_a_wide_tables_columns_named_as_no_latency_are_refused_naming_them(tmp_path):
    """A lab's wide table with flops, an accuracy, a proxy and a batch size beside its device read all four as
    devices' latencies (positive numbers): `hwl evaluate` scored 'flops' as a test device. They are refused by name."""
    path = tmp_path / "lab_wide.csv"
    pd.DataFrame({"arch_index": [1, 2, 3], "pi": [2.0, 3.0, 4.0], "FLOPs": [1.2e7, 3.4e7, 2.2e7],
                  "test_acc": [91.2, 88.0, 90.1], "synflow": [10.5, 30.1, 25.0], "batch_size": [1, 1, 1]}).to_csv(
        path, index=False)
    with pytest.raises(LatencyTableError) as refused:
        data.read_table(path, "nb201")
    assert str(refused.value) == (
        f"{path}: 4 columns of a wide table would be read as devices' latencies, but their names say otherwise: "
        "'FLOPs' (a count or size), 'test_acc' (an accuracy, a loss or a train/test figure), 'synflow' (a zero-cost "
        "proxy), 'batch_size' (a setting); drop them from the file, or give a long table (device and latency_ms "
        "columns)")


def test_the_public_wide_tables_read_every_device_column(tmp_path):
    """The refusal of non-latency columns keeps every device name of the shipped tables (fpga, eyeriss, 1080ti_1,
    gold_6226, ...): the first rows of both public wide tables read as all their devices."""
    if not SHARED.exists():
        pytest.skip("../shared/data not present")
    for space, name in (("nb201", "nb201_latency_wide.csv.gz"), ("fbnet", "fbnet_latency_wide.csv.gz")):
        head = pd.read_csv(SHARED / name, nrows=20)
        head.to_csv(tmp_path / name, index=False)
        devices = [c for c in head.columns if c not in ("arch_index", "arch_str", "arch_id", "arch_ops")]
        assert len(devices) == 27
        table = data.read_table(tmp_path / name, space)
        assert sorted(set(table["device"])) == sorted(devices) and len(table) == 20 * 27


@pytest.mark.parametrize("device", ["test_rig", "train-gpu", "val_board", "xeon_8_cores", "mac_m1", "amd_zen_3"])
def test_a_lab_device_named_with_a_figure_s_prefix_or_a_hardware_word_is_a_device(device):
    """Only a figure's own word (acc, loss, flops, ...) marks a column: a lab's "test_rig" is a device, not a test
    figure, and hardware words count only as a column's whole name."""
    from harness.latency_columns import non_latency_kind

    assert non_latency_kind(device) is None


def test_every_proxy_hwl_zcp_computes_is_named_as_no_latency():
    """harness keeps its own list of the proxy names (it imports no predictors module): it must cover hwl zcp's."""
    from harness.latency_columns import non_latency_kind
    from predictors.zcp.names import PROXY_NAMES

    assert [p for p in PROXY_NAMES if non_latency_kind(p) is None] == []


def test_a_long_tables_latencies_in_ns_or_a_repeated_column_are_refused(tmp_path):
    """The predictor commands' tables as `hwl data import` reads them: a long table of whole numbers reaching a
    million (ns read as ms) and a CSV naming a device twice (read as a device 'pi.1') were taken without a word."""
    path = tmp_path / "pi_ns.csv"
    path.write_text("arch_index,device,latency_ms\n1,pi,1500000\n2,pi,2500000\n")
    with pytest.raises(LatencyTableError) as refused:
        data.read_table(path, "nb201")
    assert str(refused.value) == (f"{path}: device 'pi' has latency_ms values that are whole numbers up to "
                                  "2,500,000, no latencies in ms (a time in ns, or a count such as FLOPs); give "
                                  "latencies in ms")
    path = tmp_path / "wide.csv"
    path.write_text("arch_index,pi,pi\n1,2.0,2.1\n2,3.0,3.2\n")
    with pytest.raises(LatencyTableError) as refused:
        data.read_table(path, "nb201")
    assert str(refused.value) == "wide.csv: its header names 'pi' twice; rename or drop the repeated column"


def test_a_table_with_spaces_after_its_commas_reads_one_device_per_name(tmp_path):
    """'0, pi, 1.5' rows beside '1,pi,2.5' ones were read as two devices, ' pi' and 'pi', as on import."""
    path = tmp_path / "spaced.csv"
    path.write_text("arch_index, device, latency_ms\n1, pi, 2.5\n2,pi ,1.5\n3,pi,4.0\n")
    table = data.read_table(path, "nb201")
    assert sorted(zip(table["device"], table["arch"], table["latency_ms"])) == [("pi", 1, 2.5), ("pi", 2, 1.5),
                                                                                ("pi", 3, 4.0)]


def test_by_device_of_a_frame_in_a_files_own_columns_names_what_to_read_it_with():
    # pandas.read_parquet of the public table gives arch_index and arch_str: by_device was KeyError: 'arch'
    raw = pd.DataFrame({"arch_index": [0, 1], "arch_str": [nb201.to_string(0), nb201.to_string(1)],
                        "device": ["pi", "pi"], "latency_ms": [1.0, 2.0]})
    with pytest.raises(LatencyTableError, match=r"lacks arch; it has arch_index, arch_str, device, latency_ms: read "
                                                r"the file with read_table\(path, space\), or the frame with "
                                                r"from_frame\(frame, space\), first"):
        data.by_device(raw, ["pi"])
    assert data.by_device(data.from_frame(raw, "nb201"))["pi"].to_dict() == {0: 1.0, 1: 2.0}
