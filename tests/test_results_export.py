"""Exporting a campaign's results: Parquet written a page at a time, and HELP's wide table."""
import os
import tempfile
import threading

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.campaign import CampaignSpec, plan_campaign
from harness.cli import main as hwl_main
from harness.errors import CampaignError
from harness.exporting import export_parquet, read_parquet_export, wide_table
from harness.store import Store
from spaces import fbnet, nb201
from spaces.errors import ArchError
from tests.campaign_helpers import write_profile


def _failed(message):
    return {"outcome": "runtime_error", "error_kind": "RuntimeError", "error_message": message}


def _ok(label):
    return {"outcome": "ok", "flags": [], "block_size": 4, "samples_ns": [[label * 1e6]] * 3,
            "stats": {"label_ms": label, "median_ms": label, "iqr_over_median": 0.01},
            "artifact_sha256": "ab" * 32}


@pytest.fixture
def campaign(tmp_path):
    """Two devices x 3 archs. The first results are failures with no statistics and no artifact,
    so a small first page has every measurement column empty."""
    profiles = tuple(str(write_profile(tmp_path, name)) for name in ("dev-a", "dev-b"))
    store = Store(tmp_path / "lab.db")
    cid, _, _ = plan_campaign(store, CampaignSpec(space="nb201", archs="5,7,9", devices=profiles))
    jobs = [row[0] for d in ("dev-a", "dev-b") for row in store.queued_jobs(cid, d)]
    for job in jobs[:2]:
        store.finish_attempt(job, store.start_attempt(job), record=_failed("first try"), job_state="queued")
    for i, job in enumerate(jobs):
        store.finish_attempt(job, store.start_attempt(job), record=_ok(1.0 + i), job_state="done")
    yield store, cid
    store.close()


def test_a_paged_export_is_the_same_table_as_one_page(campaign, tmp_path):
    store, cid = campaign
    paged = read_parquet_export(export_parquet(store, cid, tmp_path / "paged.parquet", rows=2))
    whole = read_parquet_export(export_parquet(store, cid, tmp_path / "whole.parquet"))
    assert paged.equals(whole) and len(whole) == 8
    # types come from the store's schema, not from the first page (which has no label at all)
    assert paged["label_ms"].dtype == "float64" and paged["block_size"].notna().sum() == 6
    assert paged["artifact_sha256"].notna().sum() == 6 and paged["accepted"].sum() == 6
    assert list(paged["error_message"].dropna()) == ["first try"] * 2
    assert set(paged["runtime"]) == {"onnxruntime"} and set(paged["dataset"]) == {"cifar10"}
    assert list(paged["arch_str"]) == [nb201.to_string(int(a)) for a in paged["arch"]]
    assert pq.read_schema(tmp_path / "paged.parquet").metadata[b"hwl_campaign"] == whole["campaign"][0].encode()
    assert not list(tmp_path.glob(".partial-*"))


def test_the_parquet_export_says_when_in_utc_and_holds_numbers_as_numbers(campaign, tmp_path):
    """created_at was float64 seconds (1.8e9: neither unit nor zone said); pandas now reads a UTC time, the
    store's second to the microsecond. Measurements stay float64 ms, counts int64, and no column is object."""
    store, cid = campaign
    export = export_parquet(store, cid, tmp_path / "lab.parquet")
    got, schema = pd.read_parquet(export), pq.read_schema(export)
    assert str(got["created_at"].dtype) == "datetime64[us, UTC]"
    stored = store.query("SELECT created_at FROM results ORDER BY id")["created_at"]
    assert (got["created_at"].astype("int64") / 1e6 - stored).abs().max() < 1e-6
    # a failed attempt has no count: pandas reads the int64 column with its nulls as float
    assert str(schema.field("label_ms").type) == "double" and str(schema.field("n_samples").type) == "int64"
    assert [c for c in got.columns if got[c].dtype == object] == []


def test_an_nb201_export_keys_archs_by_index_as_hwls_other_tables(campaign, tmp_path):
    """The export's arch was the NB201 index as text ('5'), where hwl predict's and hwl onboard's tables, the
    store's latency table and HELP's hold it as int64: export.merge(predictions, on='arch') raised, and
    export[export.arch == 5] was silently empty."""
    store, cid = campaign
    export = pd.read_parquet(export_parquet(store, cid, tmp_path / "lab.parquet"))
    assert export["arch"].dtype == "int64" and len(export[export["arch"] == 5]) == 3  # one failed attempt too
    accepted = export[export["accepted"]]
    joined = accepted.merge(store.latency_table("nb201"), on=["arch", "device"])
    assert len(joined) == 6 and (joined["label_ms"] == joined["latency_ms"]).all()
    assert hwl_main(["data", "import", str(tmp_path / "lab.parquet"), "--store", str(tmp_path / "b.db")]) == 0


def test_wide_table_holds_the_accepted_labels(campaign):
    store, cid = campaign
    wide = wide_table(store, cid)
    assert list(wide.columns) == ["arch_index", "arch_str", "dev-a", "dev-b"]
    assert sorted(wide["arch_index"]) == [5, 7, 9]
    assert sorted(wide[["dev-a", "dev-b"]].to_numpy().ravel()) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_an_empty_campaign_is_refused_and_leaves_no_file(tmp_path):
    profiles = (str(write_profile(tmp_path, "dev-a")),)
    with Store(tmp_path / "lab.db") as store:
        cid, _, _ = plan_campaign(store, CampaignSpec(space="nb201", archs="5", devices=profiles))
        with pytest.raises(CampaignError, match="no results yet"):
            export_parquet(store, cid, tmp_path / "out" / "x.parquet")
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())


def test_an_output_named_like_the_store_is_refused_and_the_store_kept(campaign, tmp_path, capsys):
    store, cid = campaign
    db = store.path
    before = db.read_bytes()[:16], store.db.execute("SELECT count(*) FROM results").fetchone()[0]
    profile = tmp_path / "dev-a.toml"
    for args in (["campaign", "export", "--store", db, "--out", db],
                 ["train", "--space", "nb201", "--store", db, "--out", db],
                 ["evaluate", "--task", "N0", "--json", db],
                 ["search", "--device", "raspi4", "--max-latency-ms", "25", "--accuracy-table", tmp_path / "a.csv",
                  "--json", db],
                 ["onboard", profile, "--space", "nb201", "--store", tmp_path / "new.db",
                  "--out", tmp_path / "new.db"]):
        assert hwl_main([str(a) for a in args]) == 2, args
    errors = capsys.readouterr().err
    assert errors.count(f"{db} is an SQLite database (an hwl store?); refusing to write over it") == 3, errors
    assert f"--out {db} is also --store" in errors  # train reads the store it was told to write
    assert f"{tmp_path / 'new.db'} is the store (--store)" in errors
    assert (db.read_bytes()[:16], store.db.execute("SELECT count(*) FROM results").fetchone()[0]) == before
    assert not (tmp_path / "new.db").exists()


def test_an_export_to_a_pipe_is_written_in_place(campaign, tmp_path):
    """A FIFO (or /dev/stdout) is not read for an SQLite header, nor replaced by a renamed file."""
    store, cid = campaign
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.update(data=fifo.read_bytes()))
    reader.start()
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(fifo), "--format", "help"]) == 0
    reader.join(timeout=60)
    assert got["data"].decode().splitlines()[0] == "arch_index,arch_str,dev-a,dev-b" and fifo.is_fifo()


@pytest.mark.parametrize("fmt", ["parquet", "help"])
def test_out_dash_writes_to_stdout_and_names_it_on_stderr(campaign, tmp_path, fmt):
    import io
    import subprocess
    import sys

    store, _ = campaign
    run = subprocess.run([sys.executable, "-m", "harness", "campaign", "export", "--store", str(store.path),
                          "--out", "-", "--format", fmt], capture_output=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stderr.decode().strip().endswith("/dev/stdout") and not (tmp_path / "-").exists()
    if fmt == "help":
        assert run.stdout.decode().splitlines()[0] == "arch_index,arch_str,dev-a,dev-b"
    else:
        assert pq.read_table(io.BytesIO(run.stdout)).num_rows == 8  # 6 results and the 2 failed first tries


def test_the_wide_csv_export_says_where_the_settings_are(campaign, tmp_path, capsys):
    """The wide CSV (HELP's format: numbers alone) was written without a word that it drops the settings that
    the Parquet export holds; a colleague given the file could not tell, nor check, what it was measured with."""
    store, _ = campaign
    capsys.readouterr()
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(tmp_path / "lab.csv.gz")]) == 0
    out, err = capsys.readouterr()
    assert out == f"{tmp_path / 'lab.csv.gz'}\n"
    assert err.splitlines()[0] == (
        f"note: {tmp_path / 'lab.csv.gz'} is HELP's wide table, latencies alone; the settings each device "
        "was measured with (threads, cores, batch size, runtime options) are in the Parquet export "
        "(--out FILE.parquet)")
    assert pd.read_csv(tmp_path / "lab.csv.gz").columns.tolist() == ["arch_index", "arch_str", "dev-a", "dev-b"]
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(tmp_path / "lab.parquet")]) == 0
    assert "note:" not in capsys.readouterr().err  # the Parquet export holds them
    assert read_parquet_export(tmp_path / "lab.parquet")["settings"].notna().all()


def test_an_export_and_its_import_say_what_they_wrote_where(campaign, tmp_path, capsys):
    """`hwl campaign export` printed the file's name alone and `hwl data import` a JSON line (file, space, rows)
    that named neither the devices nor the store: now one line on stderr each, stdout as it was for scripts."""
    store, _ = campaign
    name = store.campaign_names()[0]
    parquet, wide = tmp_path / "lab.parquet", tmp_path / "lab.csv"
    capsys.readouterr()
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(parquet)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{parquet}\n"
    assert err == (f"wrote 6 accepted latencies of 2 devices (campaign {name}; 8 results with 2 failed or "
                   f"superseded attempts) to {parquet}\n")
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--device", "dev-b", "--out", str(wide)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{wide}\n"
    assert err.splitlines()[1] == f"wrote 3 latencies of 1 device on 3 architectures (campaign {name}) to {wide}"
    fresh = tmp_path / "fresh.db"
    assert hwl_main(["data", "import", str(parquet), "--store", str(fresh)]) == 0
    out, err = capsys.readouterr()
    assert out == f'{{"file": "{parquet}", "space": "nb201", "rows": 6, "stored": 6}}\n'
    assert f"imported 6 nb201 latencies of 2 devices from {parquet} into {fresh}\n" in err


@pytest.mark.parametrize("out", ["-", "/proc/self/fd/1"])
def test_stdout_redirected_to_a_file_gets_the_export(campaign, tmp_path, out):
    """``--out - > results.parquet``: the shell's file is written in place. A file renamed over
    /dev/stdout replaced that link itself (as root) and left results.parquet empty."""
    import subprocess
    import sys

    store, _ = campaign
    target = tmp_path / "results.parquet"
    with target.open("wb") as stdout:
        run = subprocess.run([sys.executable, "-m", "harness", "campaign", "export", "--store", str(store.path),
                              "--out", out], stdout=stdout, stderr=subprocess.PIPE, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr.decode()
    assert pq.read_table(target).num_rows == 8
    assert os.path.islink("/dev/stdout") and not os.path.lexists("/dev/.partial-stdout")


def test_an_export_through_a_symlink_replaces_the_file_and_keeps_the_link(campaign, tmp_path):
    store, _ = campaign
    (tmp_path / "run-1.csv").write_text("old\n")
    (tmp_path / "latest.csv").symlink_to("run-1.csv")
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(tmp_path / "latest.csv"),
                     "--format", "help"]) == 0
    assert (tmp_path / "latest.csv").is_symlink()
    assert (tmp_path / "run-1.csv").read_text().startswith("arch_index,arch_str,dev-a,dev-b")


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_a_plain_file_under_dev_is_still_written_whole(tmp_path):
    """Only names of open files (/dev/stdout, /dev/fd/N, /proc/...) are written in place."""
    from harness.paths import names_a_stream

    with tempfile.NamedTemporaryFile(dir="/dev/shm", suffix=".csv") as plain, (tmp_path / "f").open("w") as f:
        assert not names_a_stream(plain.name)
        assert names_a_stream(f"/dev/fd/{f.fileno()}") and names_a_stream(f"/proc/self/fd/{f.fileno()}")


def test_a_campaign_command_without_a_name_says_which_of_several_it_took(campaign, tmp_path, caplog):
    store, cid = campaign
    profile = str(write_profile(tmp_path, "dev-c"))
    plan_campaign(store, CampaignSpec(space="nb201", archs="11", devices=(profile,), name="later"))
    assert hwl_main(["campaign", "status", "--store", str(store.path)]) == 0
    # the campaign taken was listed among the others --name picks
    first = store.campaign_names()[0]
    assert f"holds 2 campaigns; taking the latest, later (--name picks another: {first})" in caplog.text


# LAB_HELP.CSV.GZ was written as a plain CSV, which the import (and zcat, and pandas) refused as no gzip file
@pytest.mark.parametrize("out", ["lab.parquet", "lab.csv", "lab_help.csv.gz", "LAB_HELP.CSV.GZ"])
def test_an_export_imports_into_a_fresh_store_with_its_accepted_labels(campaign, tmp_path, out):
    # hwl data import refused hwl's own exports: no 'latency_ms' column (label_ms, or one column per device)
    store, cid = campaign
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(tmp_path / out)]) == 0
    wide = [] if out.endswith(".parquet") else ["--wide"]  # the CSV export is HELP's table: one column per device
    assert hwl_main(["data", "import", str(tmp_path / out), "--store", str(tmp_path / "fresh.db"), *wide]) == 0
    with Store(tmp_path / "fresh.db") as fresh:
        got = fresh.latency_table("nb201")
    want = store.query("SELECT j.device, CAST(j.arch AS INTEGER) AS arch, r.label_ms FROM results r "
                       "JOIN jobs j ON j.id = r.job_id WHERE r.accepted = 1")
    assert len(got) == len(want) == 6  # the two failed first attempts are not latencies
    assert sorted(zip(got["device"], got["arch"], got["latency_ms"])) == \
        sorted(zip(want["device"], want["arch"], want["label_ms"]))


@pytest.mark.parametrize("fmt", [[], ["--format", "help"]])
def test_a_csv_name_of_another_compression_is_refused_and_nothing_written(campaign, tmp_path, capsys, fmt):
    """--out lab.csv.bz2 wrote Parquet bytes under that name (with --format help, a plain CSV): neither reads back
    as the .csv.bz2 it says it is."""
    store, _ = campaign
    out = tmp_path / "lab.csv.bz2"
    capsys.readouterr()
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(out), *fmt]) == 2
    assert capsys.readouterr().err == (f"hwl campaign: error: --out {out}: the wide table is written as .csv, or "
                                       "gzipped as .csv.gz; name it so (or .parquet for the Parquet export)\n")
    assert not out.exists()


def test_exporting_a_store_of_imported_tables_says_what_it_holds(campaign, tmp_path, capsys):
    """An export imported into a second store, then `hwl campaign export` of that store: 'holds no campaign;
    start one with hwl campaign run', as if the store held nothing. It now names what it holds and what to do."""
    store, _ = campaign
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(tmp_path / "lab.parquet")]) == 0
    second = str(tmp_path / "second.db")
    assert hwl_main(["data", "import", str(tmp_path / "lab.parquet"), "--store", second]) == 0
    capsys.readouterr()
    for command in (["export", "--out", str(tmp_path / "again.parquet")], ["status"]):
        assert hwl_main(["campaign", *command, "--store", second]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "only imported tables (6 latencies from lab.parquet)" in err, err
        assert "start one with" not in err and f"give the predictor commands --store {second}" in err
    assert not (tmp_path / "again.parquet").exists()


def test_a_wide_table_with_a_missing_cell_imports_the_filled_ones(tmp_path):
    wide = tmp_path / "fbnet_wide.csv"
    keys = [fbnet.to_key(["skip"] * 22), fbnet.to_key(["k3_e1"] * 22)]
    wide.write_text(f'arch_id,arch_ops,pixel2,raspi4\n0,"{keys[0]}",3.0,\n1,"{keys[1]}",4.0,7.5\n')
    assert hwl_main(["data", "import", str(wide), "--store", str(tmp_path / "lab.db"), "--wide"]) == 0
    with Store(tmp_path / "lab.db") as s:
        got = s.latency_table("fbnet")
    assert sorted(zip(got["device"], got["arch"], got["latency_ms"])) == \
        sorted([("pixel2", keys[0], 3.0), ("pixel2", keys[1], 4.0), ("raspi4", keys[1], 7.5)])



def test_a_table_of_other_numbers_is_not_taken_for_a_wide_latency_table(tmp_path, capsys):
    # an accuracy table has the wide table's shape: without --wide it is refused, saying what --wide is for
    acc = tmp_path / "nb201_accuracy.csv"
    acc.write_text("arch_index,arch_str,cifar10_test_acc\n0,|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+"
                   "|nor_conv_1x1~0|skip_connect~1|skip_connect~2|,85.9\n")
    assert hwl_main(["data", "import", str(acc), "--store", str(tmp_path / "lab.db")]) == 2
    err = capsys.readouterr().err
    assert "no 'latency_ms' column" in err and "needs --wide" in err
    assert not (tmp_path / "lab.db").exists()


def test_the_predictor_commands_read_a_parquet_export_as_its_accepted_labels(campaign, tmp_path, capsys):
    # `hwl adapt --measurements lab.parquet` (and --test-table, --table) refused hwl's own export in one
    # line listing its 47 columns: it has label_ms, not latency_ms
    from predictors.data import read_table

    store, cid = campaign
    export = export_parquet(store, cid, tmp_path / "lab.parquet")
    got = read_table(export, "nb201")
    want = store.query("SELECT j.device, CAST(j.arch AS INTEGER) AS arch, r.label_ms FROM results r "
                       "JOIN jobs j ON j.id = r.job_id WHERE r.accepted = 1")
    assert sorted(zip(got["device"], got["arch"], got["latency_ms"])) == \
        sorted(zip(want["device"], want["arch"], want["label_ms"]))
    model, adapted = tmp_path / "model.pt", tmp_path / "adapted.pt"
    assert hwl_main(["train", "--space", "nb201", "--method", "hwl_ridge", "--devices", "1080ti_1,pixel3",
                     "--n-pretrain", "50", "--out", str(model)]) == 0
    assert hwl_main(["adapt", str(model), "--device", "dev-b", "--measurements", str(export),
                     "--out", str(adapted)]) == 0
    assert "adapted to dev-b with 3 measurements" in capsys.readouterr().out


def test_an_exports_drifted_latencies_are_warned_of_as_the_stores_are(campaign, tmp_path, caplog):
    """`hwl adapt --store lab.db` warned that dev-a's latencies were taken while its drift canary was off
    (canary_drift); the same latencies read from the Parquet export, which keeps the flag, and imported from it
    into another store, which keeps no flags, were used without a word. Both now warn, naming the device."""
    from predictors.data import read_table, store_table

    store, cid = campaign
    assert store.flag_results_since(cid, "dev-a", 0, "canary_drift")[1] == 3  # jobs; its failed attempts too
    export = export_parquet(store, cid, tmp_path / "lab.parquet")

    def drift_warnings(read) -> list[str]:
        caplog.clear()
        read()
        return [r.getMessage() for r in caplog.records if "canary_drift" in r.getMessage()]

    from_store = drift_warnings(lambda: store_table(store.path, "nb201"))
    from_file = drift_warnings(lambda: read_table(export, "nb201"))
    assert len(from_store) == len(from_file) == 1 and "3 latencies" in from_file[0] and "dev-a 3" in from_file[0]
    assert "dev-b" not in from_file[0]
    assert drift_warnings(lambda: read_table(export, "nb201", devices=["dev-b"])) == []  # not read: not named
    with pytest.raises(ArchError):  # read as the other space: refused in its one line, no warning before it
        assert drift_warnings(lambda: read_table(export, "fbnet")) == []
    assert not [r for r in caplog.records if "canary_drift" in r.getMessage()]
    imported = drift_warnings(lambda: hwl_main(["data", "import", str(export), "--store", str(tmp_path / "b.db")]))
    assert len(imported) == 1 and "dev-a 3" in imported[0] and "keeps no flags" in imported[0]
    refused = ["data", "import", str(export), "--device", "pi", "--store", str(tmp_path / "c.db")]  # two devices
    assert drift_warnings(lambda: hwl_main(refused)) == []  # its one line of error alone


def _pi_at_batch(tmp_path, batch):
    folder = tmp_path / f"b{batch}"
    folder.mkdir(exist_ok=True)
    profile = write_profile(folder, "pi")
    if batch != 1:
        profile.write_text(profile.read_text().replace("[measurement]", f"[workload]\nbatch_size = {batch}\n\n"
                                                                        "[measurement]"))
    return str(profile)


def _measured(store, name, devices, archs, ms, space="nb201"):
    cid, _, _ = plan_campaign(store, CampaignSpec(space=space, archs=archs, devices=devices, name=name))
    for device in store.devices(cid)["device"]:
        for job, arch, _ in store.queued_jobs(cid, device):
            label = ms(device, int(arch)) if space == "nb201" else 1.0
            store.finish_attempt(job, store.start_attempt(job), record=_ok(label), job_state="done")


@pytest.fixture
def settings_store(tmp_path):
    """pi at batch 1 over two campaigns (arch 2 in both), at batch 2 in a third; jet in the first."""
    jet = str(write_profile(tmp_path, "jet"))
    with Store(tmp_path / "lab.db") as store:
        _measured(store, "b1-first", (_pi_at_batch(tmp_path, 1), jet), "0,1,2", lambda d, a: 1.0 + a)
        _measured(store, "b1-more", (_pi_at_batch(tmp_path, 1),), "2,3", lambda d, a: 2.0 + a)
        _measured(store, "b2", (_pi_at_batch(tmp_path, 2),), "0,1", lambda d, a: 10.0 + a)
    return tmp_path / "lab.db"


@pytest.mark.parametrize("out", ["pi.parquet", "pi_help.csv.gz"])
def test_one_setting_spread_over_campaigns_exports_into_one_file(settings_store, tmp_path, out, capsys):
    """`campaign export --name` took one campaign: a device's batch-1 latencies in two campaigns (an onboarding
    batch each, say) made two files, and the two-settings refusal of --store said to export one campaign, which
    left the other's latencies out. --name repeats, --device keeps one device's results, and a device of two
    settings among them is refused naming each setting and the export of the first."""
    db = str(settings_store)
    assert hwl_main(["campaign", "export", "--store", db, "--device", "pi", "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (
        "campaigns b1-first, b1-more, b2 hold pi's nb201 latencies measured with 2 different settings: 5 with "
        "batch_size = 1 (campaigns b1-first, b1-more); 2 with batch_size = 2 (campaign b2); one "
        f"file would pool them, so export one setting's campaigns (hwl campaign export --store {db} --name b1-first "
        "--name b1-more --device pi --out FILE)") in err, err
    assert not (tmp_path / out).exists()
    assert hwl_main(["campaign", "export", "--store", db, "--name", "b1-first", "--name", "b1-more",
                     "--device", "pi", "--out", str(tmp_path / out)]) == 0
    wide = [] if out.endswith(".parquet") else ["--wide"]
    assert hwl_main(["data", "import", str(tmp_path / out), "--store", str(tmp_path / "fresh.db"), *wide]) == 0
    with Store(tmp_path / "fresh.db") as fresh:
        got = fresh.latency_table("nb201").set_index("arch")
    assert set(got["device"]) == {"pi"}  # jet, in b1-first, left out
    assert got["latency_ms"].to_dict() == {0: 1.0, 1: 2.0, 2: 3.5, 3: 5.0}  # arch 2: the median of 3.0 and 4.0


def test_an_onboarding_batchs_default_export_name_travels(tmp_path, capsys, monkeypatch):
    """An onboarding batch's export was named after it, colons kept: onboard:pi:nb201:0a1b.parquet, which
    `scp onboard:pi:nb201:0a1b.parquet lab2:` takes for a file on host 'onboard', and Windows cannot hold."""
    monkeypatch.chdir(tmp_path)
    with Store(tmp_path / "lab.db") as store:
        _measured(store, "onboard:pi:nb201:0a1b", (_pi_at_batch(tmp_path, 1),), "0,1", lambda d, a: 1.0 + a)
    for fmt in ("parquet", "help"):
        assert hwl_main(["campaign", "export", "--store", "lab.db", "--name", "onboard:pi:nb201:0a1b",
                         "--format", fmt]) == 0
    assert sorted(p.name for p in tmp_path.glob("onboard*")) == ["onboard_pi_nb201_0a1b.parquet",
                                                                 "onboard_pi_nb201_0a1b_help.csv"]
    assert capsys.readouterr().out.split() == ["onboard_pi_nb201_0a1b.parquet", "onboard_pi_nb201_0a1b_help.csv"]


def test_an_export_of_several_campaigns_is_checked_for_each_device(settings_store, tmp_path, capsys, monkeypatch):
    db = str(settings_store)
    monkeypatch.chdir(tmp_path)
    assert hwl_main(["campaign", "export", "--store", db, "--name", "b1-first", "--name", "b2"]) == 2
    assert "campaigns b1-first, b2 hold pi's nb201 latencies measured with 2 different settings" in \
        capsys.readouterr().err
    assert hwl_main(["campaign", "export", "--store", db, "--name", "b1-first", "--name", "b1-more"]) == 0
    exported = read_parquet_export(tmp_path / "b1-first+b1-more.parquet")
    assert sorted(set(exported["device"])) == ["jet", "pi"] and set(exported["campaign"]) == {"b1-first", "b1-more"}
    assert pq.read_schema(tmp_path / "b1-first+b1-more.parquet").metadata[b"hwl_campaign"] == b"b1-first, b1-more"
    assert hwl_main(["campaign", "export", "--store", db, "--device", "jet"]) == 0  # its one campaign
    assert len(read_parquet_export(tmp_path / "jet.parquet")) == 3
    capsys.readouterr()  # the exports' 'wrote ...' lines
    with Store(settings_store) as store:
        _measured(store, "fb", (str(write_profile(tmp_path, "jet")),), "random:2", None, space="fbnet")
    for argv, message in (
            (["--device", "nope"], f"no campaign in {db} measures nope; devices it measures: jet, pi"),
            (["--name", "b1-more", "--device", "jet"], "campaign b1-more measures no device jet; devices: pi"),
            (["--device", "jet"], "campaigns of 2 spaces (fbnet: fb; nb201: b1-first); one export file holds one "
                                  "space: give --name of one space's campaigns")):
        assert hwl_main(["campaign", "export", "--store", db, *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_one_failed_attempt_is_said_in_the_singular(tmp_path, capsys):
    """It said '2 results with 1 failed or superseded attempts'."""
    profile = str(write_profile(tmp_path, "dev-a"))
    with Store(tmp_path / "lab.db") as store:
        cid, _, _ = plan_campaign(store, CampaignSpec(space="nb201", archs="5", devices=(profile,)))
        (job,) = [row[0] for row in store.queued_jobs(cid, "dev-a")]
        store.finish_attempt(job, store.start_attempt(job), record=_failed("first try"), job_state="queued")
        store.finish_attempt(job, store.start_attempt(job), record=_ok(1.0), job_state="done")
        name = store.campaign_names()[0]
    out = tmp_path / "lab.parquet"
    assert hwl_main(["campaign", "export", "--store", str(tmp_path / "lab.db"), "--out", str(out)]) == 0
    assert capsys.readouterr().err == (f"wrote 1 accepted latency of 1 device (campaign {name}; 2 results with 1 "
                                       f"failed or superseded attempt) to {out}\n")


def test_an_export_written_while_results_arrive_is_one_moment_of_the_store(campaign, tmp_path, capsys):
    """An export read the results, then counted them for its line in another read: with a campaign storing
    results meanwhile, `wrote 43 accepted latencies` named a file holding 42 (seen under a real campaign). It
    now reads everything in one read transaction: the file and its line agree, whatever arrives meanwhile."""
    import re
    import subprocess
    import sys

    store, _ = campaign
    writer = subprocess.Popen(  # a campaign storing attempt after attempt of a job measured again
        [sys.executable, "-c", "import sys; from harness.store import Store\n"
         "record = {'outcome': 'unstable', 'flags': ['unstable'], 'stats': {'label_ms': 1.0}}\n"
         "with Store(sys.argv[1]) as s:\n"
         "    print('ready', flush=True)\n"
         "    while True: s.finish_attempt(1, s.start_attempt(1), record=record, job_state='queued')\n",
         str(store.path)], stdout=subprocess.PIPE, text=True)
    lines, arrived = [], 0
    try:
        assert writer.stdout.readline() == "ready\n"
        # Until results arrived during 3 exports: on a loaded machine (load 20 on 2 cores) the writer can get so
        # little of a core that 5 exports saw next to none arrive. Every export's line is checked below.
        for i in range(40):
            if arrived >= 3:
                break
            before = store.db.execute("SELECT count(*) FROM results").fetchone()[0]
            out = tmp_path / f"e{i}.parquet"
            assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(out)]) == 0
            arrived += store.db.execute("SELECT count(*) FROM results").fetchone()[0] > before + 10
            written = pd.read_parquet(out)
            lines.append((capsys.readouterr().err.strip().splitlines()[-1], len(written),
                          int(written["accepted"].sum())))
    finally:
        writer.kill()
        writer.wait()
    assert arrived >= 3, "the writer stored next to nothing while the exports ran"
    for line, rows, accepted in lines:
        results = int(re.search(r"; ([\d,]+) results with", line).group(1).replace(",", ""))
        assert results == rows and f"wrote {accepted:,} accepted latencies" in line, line


def test_two_processes_exporting_to_one_file_at_once_both_write_it_whole(campaign, tmp_path):
    """Two exports to one --out at once (a cron job's and a person's): both wrote `.partial-lab.parquet`, so the
    first renamed the file the second was still writing (readers then got half a file) and the second died of
    a traceback (FileNotFoundError: '.partial-lab.parquet' -> 'lab.parquet'; 2 of 10 rounds of two real
    `hwl campaign export`). Each process now writes a partial file of its own."""
    import subprocess
    import sys

    store, _ = campaign
    out = tmp_path / "lab.parquet"
    code = ("import sys; from harness.cli import main\n"
            "sys.exit(max(main(['campaign', 'export', '--store', sys.argv[1], '--out', sys.argv[2]]) "
            "for _ in range(20)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(store.path), str(out)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errors]
    assert len(read_parquet_export(out)) == 8 and not list(tmp_path.glob(".partial-*"))


def test_a_partial_file_of_a_killed_writer_is_removed_and_a_running_one_s_kept(tmp_path):
    """Each writer has a partial file of its own now, so the next one to write the file clears those of writers that
    are gone (a killed export's would otherwise stay forever), never a running one's."""
    import socket
    import subprocess
    import sys
    import time

    from harness.paths import written_whole

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = f".partial-{socket.gethostname()}-"
    killed, running = tmp_path / f"{here}{gone.stdout.strip()}-0123abcd-out.csv", tmp_path / f"{here}1-0123abcd-out.csv"
    # a folder shared with another machine (NFS): its writer's process id means nothing here; a host whose name
    # starts as this one's ("gpu" and "gpu-2") included
    elsewhere = tmp_path / f".partial-another-host-{gone.stdout.strip()}-0123abcd-out.csv"
    longer_name = tmp_path / f"{here}{gone.stdout.strip()}-{gone.stdout.strip()}-0123abcd-out.csv"
    # another file's, in the same folder: a killed writer's is removed, whatever file it wrote
    killed_other = tmp_path / f"{here}{gone.stdout.strip()}-0123abcd-other.csv"
    # another host's (or an older hwl's) left unwritten for over an hour is taken for a killed writer's
    abandoned = tmp_path / ".partial-another-host-1-out.csv"
    for path in (killed, running, elsewhere, longer_name, killed_other, abandoned):
        path.write_text("half a table")
    os.utime(abandoned, (time.time() - 3700, time.time() - 3700))
    with written_whole(tmp_path / "out.csv") as partial:
        partial.write_text("a,b\n1,2\n")
    assert (tmp_path / "out.csv").read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (tmp_path / "out.csv", running,
                                                                                  elsewhere, longer_name))


def test_an_older_hwl_s_partial_artifact_files_go_once_an_hour_unwritten(tmp_path, monkeypatch):
    """An hwl before December 2026 left `.<sha>.onnx.*.tmp` files of killed exports in the artifact folder, which
    nothing removed (README said to delete them by hand). The sweep of a write into the folder takes them once
    untouched for an hour, as another host's partial files; a fresh one, and a file of another shape, stay."""
    import time

    from harness.artifacts import ArtifactStore

    monkeypatch.setattr("harness.paths.PARTIAL_SWEEP_INTERVAL_S", 0.0)  # each write here looks, not once a minute
    sha = "0123456789abcdef" * 4
    old = [tmp_path / f".{sha}.onnx.k3j_x9q2.tmp",  # mkstemp's name, the first hwl's
           tmp_path / f".{sha}.json.gpu-2.lab-4321-abcd1234.tmp"]  # with its writer's host and pid, a later one's
    fresh = tmp_path / f".{sha}.onnx.p0o9i8u7.tmp"  # an older hwl exporting into the folder right now
    others = [tmp_path / ".notes.tmp", tmp_path / f".{sha}.onnx", tmp_path / f"{sha}.onnx.backup.tmp"]
    for path in (*old, fresh, *others):
        path.write_bytes(b"half a model")
    for path in (*old, *others):
        os.utime(path, (time.time() - 3700, time.time() - 3700))
    art = ArtifactStore(tmp_path).put(b"a whole model", {"space": "nb201", "arch": 0})
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        p.name for p in (fresh, *others, art.path, tmp_path / f"{art.sha256}.json"))


def test_exporting_a_device_named_like_an_accuracy_points_to_the_parquet_export(tmp_path, caplog, capsys):
    """The wide table's readers refuse a column named like an accuracy or a FLOPs count, so a lab's device named
    'npu_acc' makes an export that `hwl data import --wide` refuses. The export says so and which file reads back;
    a device of an ordinary name beside it ('pi4-2t') is not named, and the Parquet export imports both."""
    with Store(tmp_path / "lab.db") as store:
        profiles = tuple(str(write_profile(tmp_path, name)) for name in ("npu_acc", "pi4-2t"))
        _measured(store, "lab", profiles, "0,1", lambda d, a: 1.0 + a)
    export = ["campaign", "export", "--store", str(tmp_path / "lab.db"), "--out"]
    assert hwl_main([*export, str(tmp_path / "lab.csv")]) == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "lab.csv: device 'npu_acc' (an accuracy, a loss or a train/test figure) is named like a column that holds no "
        "latencies, which hwl's readers of a wide table (data import --wide, the predictor commands) refuse; give them "
        "the Parquet export (--out FILE.parquet), which reads back whole"]
    capsys.readouterr()
    assert hwl_main(["data", "import", str(tmp_path / "lab.csv"), "--wide", "--store", str(tmp_path / "b.db")]) == 2
    assert "'npu_acc' (an accuracy, a loss or a train/test figure)" in capsys.readouterr().err
    assert hwl_main([*export, str(tmp_path / "lab.parquet")]) == 0
    assert hwl_main(["data", "import", str(tmp_path / "lab.parquet"), "--store", str(tmp_path / "b.db")]) == 0
    with Store(tmp_path / "b.db") as fresh:
        assert sorted(set(fresh.latency_table("nb201")["device"])) == ["npu_acc", "pi4-2t"]


@pytest.mark.parametrize("name", ["lab.parqeut", "lab.json"])
def test_an_out_name_no_reader_takes_is_refused_and_nothing_written(campaign, tmp_path, capsys, name):
    """--out lab.parqeut (a typo) or lab.json wrote Parquet bytes under that name, which `hwl data import` and the
    predictor commands then refused: "unknown table format '.parqeut'"."""
    store, _ = campaign
    out = tmp_path / name
    capsys.readouterr()
    assert hwl_main(["campaign", "export", "--store", str(store.path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {out}: hwl reads a table by its name's ending" in err
    assert "name it .parquet (one row per result), or .csv / .csv.gz (HELP's wide table)" in err
    assert not out.exists()
