"""Importers: the shared public tables and HELP's original .pt files, side by side with our data."""
import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.cli import main as hwl_main
from harness.importers import TableImportError, import_file
from harness.store import Store
from spaces import fbnet, nb201

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_help_nb201_pt_with_index_mapping(tmp_path):
    """HELP layout: latency/<device>.pt (a list, row i) + str_arch2idx.pt (arch string -> row)."""
    (tmp_path / "latency").mkdir()
    # a mapping that is NOT the identity, so the importer must use it: row r holds index perm[r]
    perm = list(range(nb201.N_ARCHS))
    perm[0], perm[1] = perm[1], perm[0]
    torch.save({nb201.to_string(perm[r]): r for r in range(nb201.N_ARCHS)}, tmp_path / "str_arch2idx.pt")
    latencies = [float(r) + 0.5 for r in range(nb201.N_ARCHS)]
    torch.save(latencies, tmp_path / "latency" / "toy_gpu_1.pt")
    with Store(tmp_path / "lab.db") as s:
        space, n = import_file(s, tmp_path / "latency" / "toy_gpu_1.pt")
        assert (space, n) == ("nb201", nb201.N_ARCHS)
        t = s.latency_table("nb201").set_index("arch")
    assert set(t["device"]) == {"toy_gpu_1"} and set(t["source"]) == {"imported:toy_gpu_1.pt"}
    assert t.loc[1, "latency_ms"] == 0.5 and t.loc[0, "latency_ms"] == 1.5 and t.loc[7, "latency_ms"] == 7.5


def test_help_fbnet_pt_with_arch_list(tmp_path):
    archs = [[0] * 22, [8] * 22, list(range(9)) + list(range(9)) + [1, 2, 3, 4]]
    torch.save(archs, tmp_path / "arch.pt")
    torch.save([3, 1, 2], tmp_path / "pixel2.pt")  # HELP stores some phones as whole ms (ints)
    with Store(tmp_path / "lab.db") as s:
        assert import_file(s, tmp_path / "pixel2.pt") == ("fbnet", 3)
        t = s.latency_table("fbnet").set_index("arch")
    assert t.loc[fbnet.to_key(["skip"] * 22), "latency_ms"] == 1.0
    assert t.loc[fbnet.to_key([fbnet.OPS[i] for i in archs[2]]), "latency_ms"] == 2.0


def test_help_pt_errors(tmp_path):
    torch.save([1.0, 2.0], tmp_path / "short.pt")
    torch.save({"not": "a list"}, tmp_path / "dict.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with Store(tmp_path / "lab.db") as s:
        with pytest.raises(TableImportError, match="needs HELP's arch.pt"):
            import_file(s, tmp_path / "short.pt")
        with pytest.raises(TableImportError, match="holds a list of numbers"):
            import_file(s, tmp_path / "dict.pt")
        with pytest.raises(TableImportError, match="not a readable HELP .pt") as bad:
            import_file(s, tmp_path / "garbage.pt")
        assert "\n" not in str(bad.value) and "weights_only" not in str(bad.value)  # not torch's advice
        with pytest.raises(TableImportError, match="unknown table format"):
            import_file(s, Path(__file__))
        assert s.latency_table("nb201").empty


def test_corrupt_parquet_or_csv_is_a_clear_error(tmp_path):
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 truncated by a failed copy")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    with Store(tmp_path / "lab.db") as s:
        with pytest.raises(TableImportError, match=r"cut.parquet: not a readable .parquet table"):
            import_file(s, tmp_path / "cut.parquet")
        with pytest.raises(TableImportError, match=r"binary.csv: not a readable .csv table"):
            import_file(s, tmp_path / "binary.csv")
        assert s.latency_table("nb201").empty


def test_long_table_csv_by_arch_string(tmp_path):
    df = pd.DataFrame({"arch_str": [nb201.to_string(3), nb201.to_string(11)], "device": ["pi", "pi"],
                       "latency_ms": [9.0, 8.0]})
    df.to_csv(tmp_path / "mine.csv", index=False)
    pd.DataFrame({"arch_str": ["|bogus~0|"], "device": ["pi"], "latency_ms": [1.0]}).to_csv(
        tmp_path / "bad.csv", index=False)
    with Store(tmp_path / "lab.db") as s:
        assert import_file(s, tmp_path / "mine.csv") == ("nb201", 2)
        with pytest.raises(Exception, match="NB201"):
            import_file(s, tmp_path / "bad.csv")
        assert sorted(s.latency_table("nb201")["arch"]) == [3, 11]


@pytest.mark.parametrize("csv, error", [
    ("1,pi,2.0\n2,pi,-3\n", r"bad.csv: 1 latency_ms value is missing, not a number or not positive \(first at "
                             r"data row 2: -3.0\)"),
    ("1,pi,0\n", r"not positive \(first at data row 1: 0\)"),
    ("1.5,pi,2.0\n", r"bad.csv: data row 1: arch_index 1.5: not a whole number"),
    ("x,pi,2.0\n", r"data row 1: arch_index 'x'"),
    (",pi,2.0\n", r"data row 1: arch_index is empty; fill it or remove the row"),
    ("1,,2.0\n", r"1 row has no device \(first at data row 1\)"),
    ("7,pi,1.0\n99999,pi,2.0\n", r"data row 2: arch_index 99999: NB201 index 99999 is out of range"),
    ("7,pi,\n", r"not positive \(first at data row 1: ''\)"),
    ("7,pi,1.0\n7,pi,2.0\n", r"bad.csv: data rows 1 and 2 both give arch 7 on device 'pi'; keep one"),
])
def test_a_bad_row_is_refused_naming_it_and_the_store_keeps_what_it_held(tmp_path, csv, error):
    (tmp_path / "bad.csv").write_text("arch_index,device,latency_ms\n" + csv)
    (tmp_path / "good.csv").write_text("arch_index,device,latency_ms\n5,pi,1.0\n")
    with Store(tmp_path / "lab.db") as s:
        import_file(s, tmp_path / "good.csv")
        with pytest.raises(TableImportError, match=error):
            import_file(s, tmp_path / "bad.csv")
        assert s.latency_table("nb201")[["arch", "latency_ms"]].values.tolist() == [[5, 1.0]]


def test_device_names_are_names_and_an_empty_device_flag_is_refused(tmp_path):
    (tmp_path / "na.csv").write_text("arch_index,device,latency_ms\n1,NA,2.0\n2,nan,3.0\n")
    with Store(tmp_path / "lab.db") as s:
        import_file(s, tmp_path / "na.csv")
        assert sorted(s.latency_table("nb201")["device"]) == ["NA", "nan"]
        with pytest.raises(TableImportError, match=r"the device name \(--device\) is empty"):
            import_file(s, tmp_path / "na.csv", device=" ")


def test_a_file_of_the_same_name_replaces_only_the_rows_of_its_devices(tmp_path, caplog):
    for folder, device, ms in (("a", "pi", 2.0), ("b", "jetson", 2.0), ("c", "pi", 4.0)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "lat.csv").write_text(f"arch_index,device,latency_ms\n1,{device},{ms}\n"
                                                   f"2,{device},3.0\n")
    with Store(tmp_path / "lab.db") as s:
        import_file(s, tmp_path / "a" / "lat.csv")
        import_file(s, tmp_path / "b" / "lat.csv")  # another device: kept beside pi's rows
        assert sorted(set(s.latency_table("nb201")["device"])) == ["jetson", "pi"]
        import_file(s, tmp_path / "c" / "lat.csv")  # pi again under that name, new rows: replaces, and says so
        assert len(s.latency_table("nb201")) == 4 and s.latency_table("nb201")["latency_ms"].max() == 4.0
    assert "a new version of the file lat.csv imported earlier: its 2 nb201 rows of pi replaced by 2" in caplog.text


@pytest.mark.slow
def test_cli_imports_shared_tables(tmp_path, capsys):
    nb, fb = SHARED / "nb201_latency.parquet", SHARED / "fbnet_latency.parquet"
    if not nb.exists() or not fb.exists():
        pytest.skip("shared data not present")
    db = tmp_path / "lab.db"
    assert hwl_main(["data", "import", str(nb), str(fb), "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert '"rows": 421875' in out and '"rows": 135000' in out
    with Store(db, readonly=True) as s:
        t = s.latency_table("nb201")
        assert len(t) == 421875 and t["arch"].between(0, nb201.N_ARCHS - 1).all()
        row = t[(t["arch"] == 0) & (t["device"] == "raspi4")]
        assert row["latency_ms"].iloc[0] == pytest.approx(10.481976820010459)
        assert len(s.latency_table("fbnet")) == 135000


def test_space_nb201_on_a_table_without_an_nb201_column_is_one_line(tmp_path):
    """--space nb201 on an FBNet table (arch_ops) was a KeyError traceback."""
    (tmp_path / "fb.csv").write_text(f"arch_ops,device,latency_ms\n\"{fbnet.to_key(['skip'] * 22)}\",pi,2.0\n")
    with Store(tmp_path / "lab.db") as s:
        with pytest.raises(TableImportError, match=r"fb.csv: an nb201 table needs an 'arch_index', 'arch_str' or "
                                                   r"'arch' column \(columns: arch_ops, device, latency_ms\)"):
            import_file(s, tmp_path / "fb.csv", space="nb201")
        assert s.latency_table("fbnet").empty


def test_a_lone_arch_column_of_nb201_keys_is_nb201(tmp_path):
    """An ``arch`` column of NB201 arch strings or indices was taken as FBNet and refused ('22 layers')."""
    (tmp_path / "strs.csv").write_text(f"arch,device,latency_ms\n{nb201.to_string(3)},pi,2.0\n"
                                       f"{nb201.to_string(11)},pi,3.0\n")
    (tmp_path / "idx.csv").write_text("arch,device,latency_ms\n5,jetson,2.0\n")
    fb_key = fbnet.to_idx_key(["skip"] * 21 + ["k3_e1"])
    (tmp_path / "fb.csv").write_text(f"arch,device,latency_ms\n{fb_key},pi,2.0\n")
    with Store(tmp_path / "lab.db") as s:
        assert import_file(s, tmp_path / "strs.csv") == ("nb201", 2)
        assert import_file(s, tmp_path / "idx.csv") == ("nb201", 1)
        assert import_file(s, tmp_path / "fb.csv") == ("fbnet", 1)  # FBNet's op-index keys stay FBNet
        assert sorted(s.latency_table("nb201")["arch"]) == [3, 5, 11]
        assert s.latency_table("fbnet")["arch"].tolist() == [fbnet.canonical(fb_key)]


def test_arch_index_and_arch_str_naming_different_cells_are_refused(tmp_path):
    """Both columns present: arch_index was taken and a contradicting arch_str ignored, storing a latency
    under a cell the file may not mean."""
    (tmp_path / "good.csv").write_text(f"arch_index,arch_str,device,latency_ms\n3,{nb201.to_string(3)},pi,2.0\n")
    (tmp_path / "bad.csv").write_text(f"arch_index,arch_str,device,latency_ms\n3,{nb201.to_string(3)},pi,2.0\n"
                                      f"4,{nb201.to_string(40)},pi,5.0\n")
    with Store(tmp_path / "lab.db") as s:
        assert import_file(s, tmp_path / "good.csv") == ("nb201", 1)
        with pytest.raises(TableImportError, match=r"bad.csv: 1 row\(s\) whose arch_index and arch_str name "
                                                   r"different cells \(first at data row 2: arch_index 4, "
                                                   r"arch_str '.*' is index 40\)"):
            import_file(s, tmp_path / "bad.csv")
        assert s.latency_table("nb201")[["arch", "latency_ms"]].values.tolist() == [[3, 2.0]]


def test_device_flag_over_a_table_of_several_devices_is_refused(tmp_path):
    """--device renames every row: a table of raspi4 rows and pixel3 rows on other archs was stored as one device
    whose latencies were half one device's, half the other's."""
    (tmp_path / "two.csv").write_text("arch_index,device,latency_ms\n1,raspi4,9.0\n2,pixel3,3.0\n")
    (tmp_path / "one.csv").write_text("arch_index,device,latency_ms\n1,pi,9.0\n2,pi,3.0\n")
    with Store(tmp_path / "lab.db") as s:
        with pytest.raises(TableImportError, match=r"two.csv: its device column holds 2 devices \(pixel3, raspi4\) "
                                                   r"and --device my_pi would merge them"):
            import_file(s, tmp_path / "two.csv", device="my_pi")
        assert s.latency_table("nb201").empty
        assert import_file(s, tmp_path / "one.csv", device="my_pi") == ("nb201", 2)  # one device: renamed
        pd.DataFrame({"arch_index": [3, 4], "device": ["pi", None], "latency_ms": [1.0, 2.0]}).to_parquet(
            tmp_path / "gap.parquet")
        assert import_file(s, tmp_path / "gap.parquet", device="gap_pi") == ("nb201", 2)  # --device fills the gap
        assert s.latency_table("nb201")["device"].value_counts().to_dict() == {"my_pi": 2, "gap_pi": 2}


@pytest.mark.skipif(not (SHARED / "fbnet_archs.csv").is_file(), reason="needs ../shared/data")
def test_fbnet_op_index_keys_are_imported_and_checked_against_arch_ops(tmp_path):
    """HELP's (shared/data's) op_idx_key column, as fbnet_archs.csv and fbnet_zcp.csv have it, was refused as
    'no architecture column; expected arch_index or arch_str (nb201), arch_ops or arch (fbnet)'."""
    archs = pd.read_csv(SHARED / "fbnet_archs.csv", nrows=3)
    keys = [fbnet.canonical(k) for k in archs["op_idx_key"]]
    pd.DataFrame({"arch_id": archs["arch_id"], "op_idx_key": archs["op_idx_key"], "device": "pi",
                  "latency_ms": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "long.csv", index=False)
    pd.DataFrame({"arch_id": archs["arch_id"], "op_idx_key": archs["op_idx_key"], "pi_a": [4.0, 5.0, 6.0],
                  "pi_b": [7.0, 8.0, 9.0]}).to_csv(tmp_path / "wide.csv", index=False)
    both = pd.DataFrame({"arch_ops": keys, "op_idx_key": archs["op_idx_key"], "device": "pi_c",
                         "latency_ms": [1.0, 2.0, 3.0]})
    both.to_csv(tmp_path / "both.csv", index=False)
    both.assign(op_idx_key=archs["op_idx_key"][[0, 2, 1]].to_numpy()).to_csv(tmp_path / "crossed.csv", index=False)
    with Store(tmp_path / "lab.db") as s:
        assert import_file(s, tmp_path / "long.csv") == ("fbnet", 3)
        assert import_file(s, tmp_path / "wide.csv", wide=True) == ("fbnet", 6)  # op_idx_key is no device column
        assert import_file(s, tmp_path / "both.csv") == ("fbnet", 3)
        with pytest.raises(TableImportError, match=r"crossed.csv: 2 row\(s\) whose arch_ops and op_idx_key name "
                                                   r"different architectures \(first at data row 2: arch_ops 'k"):
            import_file(s, tmp_path / "crossed.csv")
        table = s.latency_table("fbnet")
    assert sorted(set(table["device"])) == ["pi", "pi_a", "pi_b", "pi_c"] and len(table) == 12
    assert table[table["device"] == "pi"].set_index("arch")["latency_ms"].to_dict() == dict(zip(keys, [1.0, 2.0, 3.0]))


def test_an_empty_table_is_refused_and_suffixes_are_read_in_any_case(tmp_path, capsys):
    """A header-only CSV (or a wide table of empty cells) printed {"rows": 0} and exit 0, so a wrong file passed
    for silently; LAB.CSV and lab.csv.GZ were refused as "unknown table format '.CSV'", which hwl adapt reads."""
    (tmp_path / "empty.csv").write_text("arch_index,device,latency_ms\n")
    (tmp_path / "blank_wide.csv").write_text("arch_index,pi,pi3\n1,,\n")
    (tmp_path / "LAB.CSV").write_text("arch_index,device,latency_ms\n1,pi,2.0\n")
    pd.DataFrame({"arch_index": [2], "device": ["pi2"], "latency_ms": [3.0]}).to_csv(tmp_path / "lab.csv.GZ",
                                                                                    index=False)
    pd.DataFrame({"arch_index": [4], "device": ["pi3"], "latency_ms": [5.0]}).to_parquet(tmp_path / "lab.pq")
    store = str(tmp_path / "lab.db")
    assert hwl_main(["data", "import", str(tmp_path / "LAB.CSV"), "--store", store]) == 0
    for name, wide in (("empty.csv", []), ("blank_wide.csv", ["--wide"])):
        assert hwl_main(["data", "import", str(tmp_path / name), "--store", store] + wide) == 2
        assert f"{name}: holds no latencies; nothing imported" in capsys.readouterr().err
    assert hwl_main(["data", "import", str(tmp_path / "lab.csv.GZ"), str(tmp_path / "lab.pq"), "--store", store]) == 0
    with Store(store) as s:
        assert s.latency_table("nb201").set_index("arch")["latency_ms"].to_dict() == {1: 2.0, 2: 3.0, 4: 5.0}


def _lat_csv(path, device, latencies):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{i},{device},{ms}\n" for i, ms in enumerate(latencies))
    path.write_text("arch_index,device,latency_ms\n" + rows)
    return path


def test_a_device_already_imported_from_another_file_is_refused(tmp_path):
    """Two labs' tables both naming pi were pooled: adapt/train/evaluate --store then took one median per arch
    over both. The second is refused naming both files; the same file again still replaces its rows."""
    lab_a = _lat_csv(tmp_path / "lab_a.csv", "pi", [2.0, 3.0])
    lab_b = _lat_csv(tmp_path / "lab_b.csv", "pi", [9.0, 8.0, 7.0])
    with Store(tmp_path / "lab.db") as s:
        import_file(s, lab_a)
        with pytest.raises(TableImportError, match=r"^lab_b.csv: device pi is already imported from lab_a.csv \(2 "
                                                   r"nb201 latencies\); their latencies would be pooled into one "
                                                   r"median per architecture, so import it under another device name "
                                                   r"\(--device NAME names a one-device table's rows\), or give it "
                                                   r"the earlier file's name to replace that file's rows; nothing "
                                                   r"imported$"):
            import_file(s, lab_b)
        assert s.latency_table("nb201")["latency_ms"].tolist() == [2.0, 3.0]  # nothing stored was lost
        assert import_file(s, lab_a) == ("nb201", 2)  # the same file again: idempotent
        assert import_file(s, lab_b, device="pi_lab_b") == ("nb201", 3)  # under its own name
        renamed = _lat_csv(tmp_path / "fixed" / "lab_a.csv", "pi", [9.0, 8.0, 7.0])
        assert import_file(s, renamed) == ("nb201", 3)  # the earlier file's name: replaces
        table = s.latency_table("nb201")
    assert table.groupby("device")["latency_ms"].sum().to_dict() == {"pi": 24.0, "pi_lab_b": 24.0}
    assert len(table) == 6


def test_a_device_in_two_files_of_one_import_command_imports_neither(tmp_path, capsys):
    """`hwl data import a.csv b.csv` of one device stored both, pooled; now one line and no store made. A device
    of the other space, or a device of another name, goes in beside the earlier file's."""
    a, b = _lat_csv(tmp_path / "a.csv", "pi", [2.0]), _lat_csv(tmp_path / "b.csv", "pi", [3.0])
    db = tmp_path / "lab.db"
    assert hwl_main(["data", "import", str(a), str(b), "--store", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("b.csv: device pi is already imported from a.csv (earlier in this command) "
                                     "(1 nb201 latency); their latencies would be pooled") in err, err
    assert not db.exists()
    fb = tmp_path / "fb.csv"
    fb.write_text(f"arch_ops,device,latency_ms\n\"{fbnet.to_key(['skip'] * 22)}\",pi,2.0\n")
    jetson = _lat_csv(tmp_path / "jetson.csv", "jetson", [5.0])
    assert hwl_main(["data", "import", str(a), str(fb), str(jetson), "--store", str(db)]) == 0
    with Store(db) as s:
        assert sorted(s.latency_table("nb201")["device"]) == ["jetson", "pi"] and len(s.latency_table("fbnet")) == 1
        s.add_imported("nb201", [("0", "jetson", 6.0), ("1", "pi", 4.0)], source="old.csv")  # a store from before
    assert hwl_main(["data", "import", str(b), "--store", str(db)]) == 2
    assert ("b.csv: device pi is already imported from a.csv (1 nb201 latency) and old.csv (1 nb201 latency); "
            "their") in capsys.readouterr().err
    one = _lat_csv(tmp_path / "one.csv", "rpi", [3.0])  # it said "1 nb201 latencies ... are already in"
    assert hwl_main(["data", "import", str(one), "--store", str(db)]) == 0
    assert f"imported 1 nb201 latency of 1 device from {one} into {db}\n" in capsys.readouterr().err
    assert hwl_main(["data", "import", str(one), "--store", str(db)]) == 0
    again = capsys.readouterr()
    assert f"one.csv: its 1 nb201 latency is already in {db} (imported from one.csv)" in again.err
    # the JSON line said "rows": 1 and nothing else, so a script summing it counted the table twice
    assert json.loads(again.out) == {"file": str(one), "space": "nb201", "rows": 1, "stored": 0}
    many = tmp_path / "many.csv"  # HELP's wide table after its long one: the devices named, a few of them
    many.write_text("arch_index,device,latency_ms\n" + "".join(f"0,dev{i},1.0\n" for i in range(7)))
    assert hwl_main(["data", "import", str(many), "--store", str(db)]) == 0
    capsys.readouterr()
    many_again = many.rename(tmp_path / "many_again.csv")  # the same table renamed: the same import, nothing changed
    assert hwl_main(["data", "import", str(many_again), "--store", str(db)]) == 0
    assert "many_again.csv: its 7 nb201 latencies are already in" in capsys.readouterr().err
    many_again.write_text("arch_index,device,latency_ms\n" + "".join(f"0,dev{i},2.0\n" for i in range(7)))
    assert hwl_main(["data", "import", str(many_again), "--store", str(db)]) == 2  # other timings of them
    assert ("many_again.csv: 7 devices are already imported from many.csv (dev0, dev1, dev2, dev3, dev4, ... "
            "(7 in all): 7 nb201 latencies); their") in capsys.readouterr().err


def test_a_store_from_before_holding_a_device_from_two_files_is_refused_by_the_predictors(tmp_path, capsys):
    """A store whose pi came from two files (imported before that was refused): train --store pooled them."""
    with Store(tmp_path / "lab.db") as s:
        s.add_imported("nb201", [(str(i), "pi", 1.0 + i) for i in range(5)], source="lab_a.csv")
        s.add_imported("nb201", [(str(i), "pi", 9.0 - i) for i in range(3)], source="lab_b.csv")
    argv = ["train", "--space", "nb201", "--method", "hwl_ridge", "--devices", "pi", "--store",
            str(tmp_path / "lab.db"), "--out", str(tmp_path / "m.pt")]
    assert hwl_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"store {tmp_path / 'lab.db'} holds pi's nb201 latencies imported from 2 files "
                                     "(5 from lab_a.csv, 3 from lab_b.csv); their median would mix them") in err, err
    assert not (tmp_path / "m.pt").exists()


def test_an_empty_architecture_cell_is_named_empty_not_nan(tmp_path):
    """pandas 3 keeps a Parquet null (or a CSV blank) as NaN: 'data row 2: arch_str nan: NB201 arch string
    expected, got nan', 'arch_index nan: not a whole number'. A float column's whole numbers are indices."""
    frames = {"strs.parquet": {"arch_str": [nb201.to_string(5), None]},
              "idx.parquet": {"arch_index": [1, None]},
              "ops.parquet": {"arch_ops": [fbnet.to_key(["skip"] * 22), None]}}
    with Store(tmp_path / "lab.db") as s:
        for name, columns in frames.items():
            pd.DataFrame({**columns, "device": "pi", "latency_ms": [1.0, 2.0]}).to_parquet(tmp_path / name)
            with pytest.raises(TableImportError, match=rf"^{name}: data row 2: {next(iter(columns))} is empty; "
                                                       r"fill it or remove the row$"):
                import_file(s, tmp_path / name)
        pd.DataFrame({"arch_index": [1.0, 2.0], "device": "pi", "latency_ms": [1.0, 2.0]}).to_parquet(
            tmp_path / "floats.parquet")
        assert import_file(s, tmp_path / "floats.parquet") == ("nb201", 2)
        assert sorted(s.latency_table("nb201")["arch"]) == [1, 2]


def test_an_empty_cell_of_the_second_architecture_column_is_named_empty(tmp_path, capsys):
    """arch_str beside arch_index (op_idx_key beside arch_ops) with an empty cell: "arch_str nan: NB201 arch
    string needs 3 nodes", from hwl data import and hwl adapt alike."""
    from predictors import data
    from predictors.data import LatencyTableError

    pd.DataFrame({"arch_index": [5, 6], "arch_str": pd.array([nb201.to_string(5), None], dtype="string"),
                  "device": "pi", "latency_ms": [1.0, 2.0]}).to_parquet(tmp_path / "na.parquet")  # pandas' NA
    pd.DataFrame({"arch_ops": [fbnet.to_key(["skip"] * 22)], "op_idx_key": [None], "device": "pi",
                  "latency_ms": [1.0]}).to_parquet(tmp_path / "fb.parquet")
    (tmp_path / "blank.csv").write_text(f"arch_index,arch_str,device,latency_ms\n5,{nb201.to_string(5)},pi,1.0\n"
                                        "6, ,pi,2.0\n")
    for name, space, row, column in (("na.parquet", "nb201", 2, "arch_str"), ("fb.parquet", "fbnet", 1, "op_idx_key"),
                                     ("blank.csv", "nb201", 2, "arch_str")):
        message = rf"{name}: data row {row}: {column} is empty; fill it or drop the column$"
        with Store(tmp_path / "lab.db") as s, pytest.raises(TableImportError, match=message):
            import_file(s, tmp_path / name)
        with pytest.raises(LatencyTableError, match=message):
            data.read_table(tmp_path / name, space)


def test_a_device_a_campaign_of_the_store_measures_is_refused_at_import(tmp_path, capsys):
    """A table naming a device that a campaign of the store measured was imported, and only the predictor commands
    refused the store later ('both measured and imported'). The import is refused now, naming the campaigns."""
    from harness.campaign import CampaignSpec, plan_campaign
    from tests.campaign_helpers import write_profile

    profile = write_profile(tmp_path, "lab-ort")
    db = tmp_path / "lab.db"
    with Store(db) as s:
        for name, archs in (("batch-1", ("1", "2")), ("batch-2", ("3",))):
            cid, _, _ = plan_campaign(s, CampaignSpec(space="nb201", archs=archs, devices=(str(profile),), name=name))
            for job, _, _ in s.queued_jobs(cid, "lab-ort")[:1]:  # batch-1: one of its two archs measured
                s.finish_attempt(job, s.start_attempt(job), job_state="done", record={
                    "outcome": "ok", "flags": [], "stats": {"label_ms": 2.0, "median_ms": 2.0}})
        before = s.query("SELECT * FROM imported")
    theirs = _lat_csv(tmp_path / "theirs.csv", "lab-ort", [5.0, 6.0])
    assert hwl_main(["data", "import", str(theirs), "--store", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("theirs.csv: device lab-ort is measured by campaigns batch-1 (1 nb201 latency), "
                                     "batch-2 (1 nb201 latency) in this store; an imported table carries no settings"
                                     ) in err, err
    assert "--device lab-ort-imported); nothing imported" in err
    with Store(db) as s:
        assert s.query("SELECT * FROM imported").equals(before)
    assert hwl_main(["data", "import", str(theirs), "--store", str(db), "--device", "lab-ort-imported"]) == 0
    fb = tmp_path / "fb.csv"  # the device's name in the other space: no campaign measures it there
    fb.write_text(f"arch_ops,device,latency_ms\n\"{fbnet.to_key(['skip'] * 22)}\",lab-ort,2.0\n")
    assert hwl_main(["data", "import", str(fb), "--store", str(db)]) == 0


def test_a_one_device_wide_table_is_imported_under_the_name_given_by_device(tmp_path, capsys):
    """`hwl campaign export --device pi --out pi_help.csv.gz` into a store that measures pi is refused, saying
    "import it under another device name (--device NAME ...)"; with --wide that was refused too ("or --device was
    given: leave out --wide"), and without --wide the table has no latency_ms: no way in. --device now renames a
    one-device wide table's column; a table of several device columns is refused, naming them."""
    (tmp_path / "pi_help.csv").write_text("arch_index,pi\n1,2.0\n2,\n3,4.0\n")
    (tmp_path / "two_help.csv").write_text("arch_index,pi,pi3\n1,2.0,3.0\n")
    db = str(tmp_path / "lab.db")
    assert hwl_main(["data", "import", str(tmp_path / "pi_help.csv"), "--wide", "--device", "pi-lab-b",
                     "--store", db]) == 0
    with Store(db) as s:
        table = s.latency_table("nb201")
    assert table.set_index("arch")["latency_ms"].to_dict() == {1: 2.0, 3: 4.0} and set(table["device"]) == {"pi-lab-b"}
    capsys.readouterr()
    assert hwl_main(["data", "import", str(tmp_path / "two_help.csv"), "--wide", "--device", "x", "--store", db]) == 2
    assert capsys.readouterr().err.endswith("two_help.csv: it has 2 device columns (pi, pi3) and --device x would "
                                            "merge them into one; import it without --device, or one device's column "
                                            "at a time\n")


def test_a_table_is_known_by_its_rows_not_only_its_file_name(tmp_path, capsys, caplog):
    """A re-import was recognised by file name only: the same table renamed (lab_a.csv -> lab_a_v1.csv) was refused
    as another lab's, and a different table under the same name replaced the rows without a word on stderr. The
    same rows under any name are now the same import (nothing changes), and new rows under the same name are a new
    version of that file, replaced with a line saying so."""
    db = str(tmp_path / "lab.db")
    first = _lat_csv(tmp_path / "lab_a.csv", "pi", [2.0, 3.0])
    assert hwl_main(["data", "import", str(first), "--store", db]) == 0
    capsys.readouterr()
    renamed = tmp_path / "copies" / "lab_a_v1.csv"
    renamed.parent.mkdir()
    renamed.write_text("latency_ms,device,arch_index\n3.0,pi,1\n2.0,pi,0\n")  # other order, same rows
    assert hwl_main(["data", "import", str(renamed), str(first), "--store", db]) == 0
    err = capsys.readouterr().err
    assert ("lab_a_v1.csv: its 2 nb201 latencies are already in " + db + " (imported from lab_a.csv); nothing "
            "changed") in err and "lab_a.csv: its 2 nb201 latencies are already in" in err, err
    with Store(db) as s:
        assert s.query("SELECT DISTINCT source FROM imported")["source"].tolist() == ["lab_a.csv"]
    newer = _lat_csv(tmp_path / "new" / "lab_a.csv", "pi", [2.5, 3.5, 4.5])
    assert hwl_main(["data", "import", str(newer), "--store", db]) == 0
    assert "a new version of the file lab_a.csv imported earlier: its 2 nb201 rows of pi replaced by 3" in caplog.text
    with Store(db) as s:
        assert s.latency_table("nb201")["latency_ms"].tolist() == [2.5, 3.5, 4.5]


def test_two_imports_at_once_of_one_device_from_two_files_store_one_of_them(tmp_path):
    """Two `hwl data import` processes at once, of two labs' tables of one device: each checked the store, found
    no other file of pi, then stored its rows, so the store held pi from both (which the predictor commands
    refuse, and which one import after the other refuses). The check and the writes now hold the store's write
    lock together: the second import checks once the first has stored, and is refused. A real writer holding
    that lock while both start (a campaign writing) makes them meet there every time."""
    import sqlite3
    import subprocess
    import sys

    db = tmp_path / "lab.db"
    Store(db).close()
    tables = [_lat_csv(tmp_path / f"lab_{lab}.csv", "pi", [ms, ms + 1.0]) for lab, ms in (("a", 2.0), ("b", 9.0))]
    code = ("import sys; from harness.cli import main; import harness.cli.data, harness.importers\n"
            "print('ready', flush=True); sys.stdin.readline()\n"
            "sys.exit(main(['data', 'import', sys.argv[1], '--store', sys.argv[2]]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(t), str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for t in tables]
    for p in procs:
        assert p.stdout.readline() == "ready\n", p.communicate()[1]
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    time.sleep(2)  # both have read the store and wait for its write lock
    writer.execute("ROLLBACK")
    writer.close()
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2], errors
    refused = next(e for p, e in zip(procs, errors) if p.returncode == 2)
    assert re.search(r"lab_[ab].csv: device pi is already imported from lab_[ab].csv \(2 nb201 latencies\)", refused)
    with Store(db, readonly=True) as s:
        assert s.imported_sources("nb201", ["pi"])["n"].tolist() == [2]


def test_a_wide_table_with_pandas_row_index_imports_its_device_columns_alone(tmp_path, capsys):
    """`hwl data import --wide` of a wide table pandas wrote with its row index (to_csv without index=False) was
    refused ('latency_ms value is missing, not a number or not positive (first at data row 1: 0.0)'): the header-less
    column was read as a device. It is left out, with a warning, and the devices' cells are imported as they are."""
    wide = tmp_path / "lab_help.csv"
    pd.DataFrame({"arch_index": [4, 2], "pi": [2.5, 1.5]}).to_csv(wide)
    db = str(tmp_path / "lab.db")
    assert hwl_main(["data", "import", str(wide), "--wide", "--store", db]) == 0
    with Store(db) as s:
        table = s.latency_table("nb201")
    assert sorted(zip(table["device"], table["arch"], table["latency_ms"])) == [("pi", 2, 1.5), ("pi", 4, 2.5)]
    assert "imported 2 nb201 latencies of 1 device" in capsys.readouterr().err


def test_a_table_of_ones_own_with_two_thread_counts_of_a_device_is_not_imported(tmp_path, capsys):
    """A long table with a threads column of 1 and 2 under one device name was imported as one device (its rows on
    other archs), so every predictor command then pooled the two settings; it is refused, and nothing is stored."""
    path = tmp_path / "lab.csv"
    path.write_text("arch_index,device,latency_ms,threads\n1,pi,1.0,1\n2,pi,0.6,2\n")
    db = tmp_path / "lab.db"
    assert hwl_main(["data", "import", str(path), "--store", str(db)]) == 2
    assert capsys.readouterr().err.endswith("lab.csv holds pi's latencies measured with 2 different settings: 1 with "
                                            "threads = 1; 1 with threads = 2; their median would mix them, so keep "
                                            "one setting's rows, or give each setting its own device name\n")
    assert not db.exists()


def test_a_wide_tables_flops_and_accuracy_columns_are_refused_and_the_store_keeps_its_rows(tmp_path, capsys):
    """`hwl data import --wide` of a lab's table with flops and val_acc columns stored 'flops' and 'val_acc' as two
    devices' latencies. It is refused in one line naming them; the store keeps what it held and gains nothing."""
    db = str(tmp_path / "lab.db")
    (tmp_path / "first.csv").write_text("arch_index,nano\n7,0.5\n")
    assert hwl_main(["data", "import", str(tmp_path / "first.csv"), "--wide", "--store", db]) == 0
    lab = tmp_path / "lab_help.csv"
    pd.DataFrame({"arch_index": [4, 2], "pi": [2.5, 1.5], "flops": [8.1e7, 4.4e7], "val_acc": [0.91, 0.88]}).to_csv(
        lab, index=False)
    capsys.readouterr()
    assert hwl_main(["data", "import", str(lab), "--wide", "--store", db]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("lab_help.csv: 2 columns of a wide table would be read as devices' latencies, "
                                     "but their names say otherwise: 'flops' (a count or size), 'val_acc' (an "
                                     "accuracy, a loss or a train/test figure); drop them from the file") in err, err
    with Store(db) as s:
        table = s.latency_table("nb201")
    assert list(zip(table["device"], table["arch"], table["latency_ms"])) == [("nano", 7, 0.5)]


@pytest.mark.parametrize("name, table, wide, repeated", [
    # pandas read the second 'pi' as a device 'pi.1', which was stored beside 'pi' with the other column's latencies
    ("lab_wide.csv", "arch_index,pi,pi\n4,2.5,2.7\n2,1.5,1.6\n", True, "'pi'"),
    # the second latency_ms column (another run, say) was left unread without a word
    ("lab.csv", "arch_index,device,latency_ms,latency_ms\n4,pi,2.5,2.7\n", False, "'latency_ms'"),
    ("lab.parquet", None, False, "'latency_ms'"),  # pyarrow's refusal ran over 9 lines
])
def test_a_table_naming_a_column_twice_is_refused_and_the_store_keeps_its_rows(tmp_path, capsys, name, table, wide,
                                                                                repeated):
    db = str(tmp_path / "lab.db")
    (tmp_path / "first.csv").write_text("arch_index,device,latency_ms\n7,nano,0.5\n")
    assert hwl_main(["data", "import", str(tmp_path / "first.csv"), "--store", db]) == 0
    path = tmp_path / name
    if table is None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_arrays([pa.array([4]), pa.array(["pi"]), pa.array([2.5]), pa.array([2.7])],
                                            names=["arch_index", "device", "latency_ms", "latency_ms"]), path)
    else:
        path.write_text(table)
    capsys.readouterr()
    assert hwl_main(["data", "import", str(path), "--store", db] + ["--wide"] * wide) == 2
    err = capsys.readouterr().err
    assert err == f"hwl data: error: {name}: its header names {repeated} twice; rename or drop the repeated column\n"
    with Store(db) as s:
        stored = s.latency_table("nb201")
    assert list(zip(stored["device"], stored["arch"], stored["latency_ms"])) == [("nano", 7, 0.5)]


def test_a_long_tables_latencies_in_ns_are_refused_as_a_wide_tables_are(tmp_path, capsys):
    """A wide table's column of whole numbers reaching a million is refused (a time in ns, a count), but the same
    latencies in a long table were stored as milliseconds: 1,500,000 ms, 25 minutes per inference."""
    db = str(tmp_path / "lab.db")
    (tmp_path / "first.csv").write_text("arch_index,device,latency_ms\n7,nano,0.5\n")
    assert hwl_main(["data", "import", str(tmp_path / "first.csv"), "--store", db]) == 0
    path = tmp_path / "pi_ns.csv"
    path.write_text("arch_index,device,latency_ms\n4,nano2,0.7\n4,pi,1500000\n2,pi,2500000\n")
    capsys.readouterr()
    assert hwl_main(["data", "import", str(path), "--store", db]) == 2
    assert capsys.readouterr().err == (
        "hwl data: error: pi_ns.csv: device 'pi' has latency_ms values that are whole numbers up to 2,500,000, no "
        "latencies in ms (a time in ns, or a count such as FLOPs); give latencies in ms\n")
    path.write_text("arch_index,device,latency_ms\n4,pi,1.5\n2,pi,2500000\n")  # one slow model in ms is a latency
    assert hwl_main(["data", "import", str(path), "--store", db]) == 0
    with Store(db) as s:
        stored = s.latency_table("nb201")
    assert sorted(zip(stored["device"], stored["arch"], stored["latency_ms"])) == [
        ("nano", 7, 0.5), ("pi", 2, 2500000.0), ("pi", 4, 1.5)]


def test_a_table_written_with_spaces_after_its_commas_names_its_devices_as_written(tmp_path, capsys):
    """A lab script's '0, pi, 1.5' rows: the header ' device' was no device column, and rows with and without the
    space (or with one before the comma) were stored as two devices, ' pi' and 'pi'."""
    db = str(tmp_path / "lab.db")
    (tmp_path / "spaced.csv").write_text("arch_index, device, latency_ms\n4, pi, 2.5\n2,pi ,1.5\n")
    (tmp_path / "spaced_wide.csv").write_text("arch_index, nano, tx2\n4, 0.5, 0.7\n")
    assert hwl_main(["data", "import", str(tmp_path / "spaced.csv"), "--store", db]) == 0
    assert hwl_main(["data", "import", str(tmp_path / "spaced_wide.csv"), "--wide", "--store", db]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"imported 2 nb201 latencies of 1 device from {tmp_path / 'spaced.csv'} into {db}",
        f"imported 2 nb201 latencies of 2 devices from {tmp_path / 'spaced_wide.csv'} into {db}"]
    with Store(db) as s:
        stored = s.latency_table("nb201")
    assert sorted(zip(stored["device"], stored["arch"], stored["latency_ms"])) == [
        ("nano", 4, 0.5), ("pi", 2, 1.5), ("pi", 4, 2.5), ("tx2", 4, 0.7)]


@pytest.mark.parametrize("header, sep, hint", [
    ("arch_index;device;latency_ms", ";", "(a file separated by semicolons? hwl reads comma-separated CSV)"),
    ("arch_index,device,Latency_ms", ",", "('Latency_ms': rename to the lower-case name without spaces)")])
def test_import_says_why_a_header_that_only_looks_right_has_no_latency_column(tmp_path, capsys, header, sep, hint):
    """`hwl data import` of a spreadsheet's ';'-separated export said "no 'latency_ms' column (columns:
    arch_index;device;latency_ms)", where `hwl adapt --measurements` of the same file says why."""
    (tmp_path / "mine.csv").write_text(f"{header}\n1{sep}pi{sep}2.5\n")
    assert hwl_main(["data", "import", str(tmp_path / "mine.csv"), "--store", str(tmp_path / "lab.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(hint), err


@pytest.mark.parametrize("name, flags, error", [
    ("mine.csv", ["--mapping", "str_arch2idx.pt"], "--mapping gives the architectures of HELP's .pt files; "),
    ("raspi4.pt", ["--wide"], "--wide reads a table of one column per device; "),
])
def test_import_refuses_a_flag_that_none_of_its_files_reads(tmp_path, capsys, name, flags, error):
    """`hwl data import mine.csv --mapping nonexistent.pt` imported the table, the mapping never looked at (and
    --wide beside HELP's .pt files alike)."""
    path = tmp_path / name
    path.write_text("arch_index,device,latency_ms\n1,pi,2.5\n")
    store = tmp_path / "lab.db"
    assert hwl_main(["data", "import", str(path), *flags, "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{error}{path}" in err, err
    assert not store.exists()
