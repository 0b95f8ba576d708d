"""A lab's own measurements to the predictors: real campaigns (local Ray, onnxruntime), `hwl campaign
export`, then `hwl adapt` / `hwl predict` on the exported file, as on another machine without the store."""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.cli import main
from harness.coordinator import CoordinatorOptions, campaign_ray
from harness.profiles import load_profiles
from harness.store import Store
from tests.campaign_helpers import kill_leftovers, write_profile

pytestmark = pytest.mark.slow
BATCH_1 = "0-9"  # ten NB201 cells at batch 1, then five of them at batch 2 under the same device name
BATCH_2 = "5-9"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A store with campaigns batch-1 and batch-2 of device lab-ort (lab.db), one with batch-1 alone (batch-1.db),
    batch-1 and a campaign of lab-ort without graph optimisation (no-opt.db), batch-1 and a campaign whose command
    device lab-bad fails every attempt (broken.db, with what that run said in broken.stderr and broken.status),
    and a model pretrained on HELP's table."""
    root = tmp_path_factory.mktemp("lab")
    for folder in ("b2", "plain", "bad"):
        (root / folder).mkdir()
    one = write_profile(root, "lab-ort")
    two = write_profile(root / "b2", "lab-ort")
    two.write_text(two.read_text().replace("[measurement]", "[workload]\nbatch_size = 2\n\n[measurement]"))
    plain = write_profile(root / "plain", "lab-ort", options={"graph_optimization": "disable"})
    bad = write_profile(root / "bad", "lab-bad", runtime="command", options={"command": "false",
                                                                              "regex": "([0-9.]+) ms"})
    ray_tmp = tempfile.mkdtemp(prefix="hwlx-", dir="/tmp")  # short: Ray's socket paths are limited
    os.environ["RAY_TMPDIR"] = ray_tmp  # Ray's daemons inherit it, so kill_leftovers finds them
    try:
        # `hwl campaign run` in this process, all four campaigns in the Ray session such a run starts (pinned off
        # the devices' core): a Ray start and a torch import in its export worker less than runs in subprocesses
        with campaign_ray(load_profiles([str(one)]), CoordinatorOptions()):  # every profile's: host, cores
            for name, archs, profile in (("batch-1", BATCH_1, one), ("batch-2", BATCH_2, two)):
                assert main(["campaign", "run", "--space", "nb201", "--archs", archs, "--devices", str(profile),
                             "--name", name, "--store", str(root / "lab.db"), "--artifacts", str(root / "art"),
                             "--canary-every", "0", "--no-progress"]) == 0
                if name == "batch-1":  # a store of one setting, for the tests of imported rows
                    for copy in ("batch-1", "no-opt", "broken"):
                        _copy_store(root / "lab.db", root / f"{copy}.db")
            assert _run(root, "no-opt", plain) == 0, (root / "no-opt.stderr").read_text()
            (root / "broken.status").write_text(str(_run(root, "broken", f"{one},{bad}")))
    finally:
        os.environ.pop("RAY_TMPDIR", None)
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert main(["train", "--space", "nb201", "--devices", "1080ti_1,pixel3,raspi4", "--n-pretrain", "300",
                 "--out", str(root / "model.pt")]) == 0
    return root


def _run(root, name, devices):
    """`hwl campaign run` of NB201 0-3 on ``devices`` into the store ``root/NAME.db``, in this process (see lab); what
    it printed to stderr is kept in ``root/NAME.stderr``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["campaign", "run", "--space", "nb201", "--archs", "0-3", "--devices", str(devices), "--name",
                       name, "--store", str(root / f"{name}.db"), "--artifacts", str(root / "art"),
                       "--canary-every", "0", "--no-progress"])
    (root / f"{name}.stderr").write_text(err.getvalue())
    return status


def _copy_store(src, dst):
    """A copy of a store with what its WAL holds (a file copy of lab.db alone may miss the last commits)."""
    source, target = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return dst


def _export(lab, name, out, store="lab.db"):
    """`hwl campaign export` of campaign ``name`` of ``lab/STORE`` to ``out``, in this process (pandas and pyarrow
    imported once, not in a process each)."""
    assert main(["campaign", "export", "--store", str(lab / store), "--name", name, "--out", str(out)]) == 0
    return out


def _accepted(lab, campaign):
    with Store(lab / "lab.db", readonly=True) as store:
        return store.query("SELECT j.arch, r.label_ms FROM results r JOIN jobs j ON r.job_id = j.id JOIN campaigns c "
                           "ON j.campaign_id = c.id WHERE c.name = ? AND r.accepted = 1", (campaign,))


def test_a_campaign_export_adapts_and_predicts_on_another_machine(lab, tmp_path, capsys):
    """The per-attempt Parquet export (label_ms, accepted) and the wide CSV were refused by the predictor commands
    ('lacks column(s) latency_ms'): a lab could not adapt on its own export without the store."""
    elsewhere = tmp_path / "elsewhere"  # only the exported files and the model travel
    elsewhere.mkdir()
    parquet = _export(lab, "batch-1", elsewhere / "batch-1.parquet")
    wide = _export(lab, "batch-1", elsewhere / "batch-1_help.csv.gz")
    shutil.copy(lab / "model.pt", elsewhere / "model.pt")
    labels = _accepted(lab, "batch-1")
    predictions = {}
    for exported in (parquet, wide):
        adapted = elsewhere / f"{exported.name}.pt"
        capsys.readouterr()
        assert main(["adapt", str(elsewhere / "model.pt"), "--device", "lab-ort", "--measurements", str(exported),
                     "--out", str(adapted)]) == 0
        assert f"adapted to lab-ort with {len(labels)} measurements" in capsys.readouterr().out
        out = elsewhere / f"{exported.name}_pred.parquet"
        assert main(["predict", str(adapted), "--device", "lab-ort", "--archs", "0-99", "--out", str(out)]) == 0
        predictions[exported.name] = pd.read_parquet(out)
    first, second = predictions.values()
    assert len(first) == 100 and (first["predicted_ms"] > 0).all()
    pd.testing.assert_frame_equal(first, second)  # both files hold the same accepted labels
    # evaluate's --test-table reads the same file (the train devices from HELP's shipped table)
    assert main(["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,pixel3", "--method", "copy",
                 "--test-table", str(parquet), "--samples", "2", "--trials", "1",
                 "--json", str(elsewhere / "eval.json")]) == 0
    assert "lab-ort" in (elsewhere / "eval.json").read_text()


def test_a_store_holding_two_settings_names_the_export_that_adapts(lab, tmp_path, capsys):
    """`hwl adapt --store` refused the device measured at batch 1 and batch 2 and said to give 'a table file',
    with no command that makes one; it now names the export, and that file adapts on the campaign's latencies."""
    capsys.readouterr()
    assert main(["adapt", str(lab / "model.pt"), "--device", "lab-ort", "--store", str(lab / "lab.db"),
                 "--out", str(tmp_path / "mixed.pt")]) == 2
    err = capsys.readouterr().err
    command = f"hwl campaign export --store {lab / 'lab.db'} --name batch-1 --device lab-ort"
    assert err.count("\n") == 1 and f"so export one setting's campaigns ({command} --out FILE.parquet)" in err, err
    assert not (tmp_path / "mixed.pt").exists()
    _export(lab, "batch-2", tmp_path / "b2.parquet")  # the other setting, as the line says for either
    assert main(["adapt", str(lab / "model.pt"), "--device", "lab-ort", "--measurements", str(tmp_path / "b2.parquet"),
                 "--out", str(tmp_path / "b2.pt")]) == 0
    assert f"with {len(_accepted(lab, 'batch-2'))} measurements" in capsys.readouterr().out


def _adapt_refuses_batch_1_and_2_joined(lab, joined, tmp_path, capsys):
    capsys.readouterr()
    assert main(["adapt", str(lab / "model.pt"), "--device", "lab-ort", "--measurements", str(joined),
                 "--out", str(tmp_path / "joined.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("joined.parquet holds lab-ort's latencies measured with 2 different settings: "
                                     "10 with batch_size = 1 (campaign batch-1); 5 with batch_size = 2 (campaign "
                                     "batch-2); their median would mix them") in err, err
    assert not (tmp_path / "joined.pt").exists()


def test_an_export_file_joining_two_settings_is_refused(lab, tmp_path, capsys):
    """Two campaigns' exports joined into one file hold lab-ort at batch 1 and batch 2: the median of each arch
    would mix them. adapt and `hwl data import` refuse the file in one line naming both settings."""
    joined = tmp_path / "joined.parquet"
    parts = [pq.read_table(_export(lab, name, tmp_path / f"{name}.parquet")) for name in ("batch-1", "batch-2")]
    pq.write_table(pa.concat_tables(parts), joined)  # keeps the first file's hwl metadata
    _adapt_refuses_batch_1_and_2_joined(lab, joined, tmp_path, capsys)
    _copy_store(lab / "lab.db", tmp_path / "copy.db")
    assert main(["data", "import", str(joined), "--store", str(tmp_path / "copy.db")]) == 2
    assert "measured with 2 different settings" in capsys.readouterr().err
    with Store(tmp_path / "copy.db", readonly=True) as store:  # nothing imported, nothing lost
        assert len(store.query("SELECT * FROM imported")) == 0
        assert len(store.latency_table("nb201")) == 15


def test_an_export_file_joining_an_export_without_the_settings_column_is_refused(lab, tmp_path, capsys):
    """An export from before the settings column (445513d) joined with a newer one: under pandas 3 its rows'
    missing settings stayed NaN through astype(str), groupby left them out, and adapt took the median of batch 1
    and batch 2. The settings columns the rows all have decide now: the file is refused, naming both."""
    new = pq.read_table(_export(lab, "batch-1", tmp_path / "batch-1.parquet"))
    old = pq.read_table(_export(lab, "batch-2", tmp_path / "batch-2.parquet")).drop_columns(["settings"])
    joined = tmp_path / "joined.parquet"
    pq.write_table(pa.concat_tables([new, old], promote_options="default"), joined)  # old rows: settings null
    _adapt_refuses_batch_1_and_2_joined(lab, joined, tmp_path, capsys)


def test_a_device_both_measured_and_imported_is_refused_from_the_store(lab, tmp_path, capsys):
    """A table imported under lab-ort (settings unknown: here another machine's timings) was merged with the
    campaign's measurements by adapt / train / evaluate --store: 'adapted to lab-ort with 30 measurements'."""
    from predictors import data

    db = tmp_path / "lab.db"
    _copy_store(lab / "batch-1.db", db)
    model = str(lab / "model.pt")
    assert main(["adapt", model, "--device", "lab-ort", "--store", str(db), "--out", str(tmp_path / "a.pt")]) == 0
    assert "with 10 measurements" in capsys.readouterr().out  # measured alone: read as before
    help_rows = data.help_table("nb201")
    theirs = help_rows[(help_rows["device"] == "raspi4") & help_rows["arch"].between(5, 29)]
    theirs.rename(columns={"arch": "arch_index"}).assign(device="lab-ort").to_csv(tmp_path / "theirs.csv", index=False)
    assert main(["data", "import", str(tmp_path / "theirs.csv"), "--store", str(db)]) == 2  # refused at import now
    assert "theirs.csv: device lab-ort is measured by campaign batch-1" in capsys.readouterr().err
    with Store(db) as s:  # a store from before that refusal
        s.add_imported("nb201", [(str(a), "lab-ort", ms) for a, ms in zip(theirs["arch"], theirs["latency_ms"])],
                       source="theirs.csv")
    line = (f"holds lab-ort's nb201 latencies both measured (10, campaign batch-1) and imported (25 from theirs.csv; "
            f"settings unknown); their median would mix them, so export the campaign (hwl campaign export --store "
            f"{db} --name batch-1 --device lab-ort --out FILE.parquet) and give that file instead of --store")
    commands = [["adapt", model, "--device", "lab-ort", "--store", str(db), "--out", str(tmp_path / "b.pt")],
                ["train", "--space", "nb201", "--method", "hwl_ridge", "--devices", "lab-ort", "--store", str(db),
                 "--out", str(tmp_path / "b.pt")],
                ["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,pixel3", "--test-devices", "lab-ort",
                 "--method", "copy", "--store", str(db), "--samples", "2", "--trials", "1",
                 "--json", str(tmp_path / "b.json")]]
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and line in err, err
    assert not (tmp_path / "b.pt").exists() and not (tmp_path / "b.json").exists()
    with Store(db, readonly=True) as store:  # nothing stored was lost
        assert len(store.latency_table("nb201")) == 35


def test_a_device_whose_jobs_have_no_accepted_latency_is_not_called_unknown(lab, tmp_path, capsys):
    """A real campaign whose command device fails every attempt (quarantined, its jobs queued): adapt, train and
    evaluate --store said "unknown device 'lab-bad'; valid devices: lab-ort", as if the store had never heard
    of it. They now say what became of its jobs and how to go on."""
    db = lab / "broken.db"  # batch-1, then campaign broken of lab-ort and lab-bad (run in the fixture's Ray)
    said = (lab / "broken.stderr").read_text()
    assert (lab / "broken.status").read_text() == "1" and "lab-bad quarantined" in said, said
    # the resume it names has the flags the campaign ran with
    line = (f"store {db} holds no accepted nb201 latency of lab-bad (campaign broken: 4 queued (device quarantined)): "
            f"once it has some (hwl campaign resume --store {db} --name broken --artifacts {lab / 'art'} "
            "--canary-every 0, or wait for the coordinator running it), run this again")
    out = str(tmp_path / "a.pt")
    commands = [["adapt", str(lab / "model.pt"), "--device", "lab-bad", "--store", str(db), "--out", out],
                ["train", "--space", "nb201", "--method", "hwl_ridge", "--devices", "lab-ort,lab-bad", "--store",
                 str(db), "--out", out],
                ["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,pixel3", "--test-devices", "lab-bad",
                 "--method", "copy", "--store", str(db), "--samples", "2", "--trials", "1"]]
    capsys.readouterr()
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and line in err, err
    assert not (tmp_path / "a.pt").exists()
    assert main(["adapt", str(lab / "model.pt"), "--device", "lab-ort", "--store", str(db),
                 "--out", str(tmp_path / "a.pt")]) == 0  # the good device of the same store adapts as before
    # the campaign's export: lab-bad's attempts are in it, but no accepted label
    exported = _export(lab, "broken", tmp_path / "broken.parquet", store="broken.db")
    capsys.readouterr()
    assert main(["adapt", str(lab / "model.pt"), "--device", "lab-bad", "--measurements", str(exported),
                 "--out", str(tmp_path / "b.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"broken.parquet holds (\d) attempts of lab-bad, none accepted "
                                               r"\(\1 runtime_error\)", err), err


@pytest.mark.skipif(not (SHARED / "nb201_accuracy.csv").is_file(), reason="needs ../shared/data")
def test_search_refuses_a_store_holding_two_settings_and_takes_the_export(lab, tmp_path, capsys):
    """`hwl search --store` read lab-ort's median over its batch 1 and batch 2 campaigns as the target device's
    latencies (adapt, train and evaluate refuse that store): it searched under a limit measured on neither."""
    search = ["search", "--device", "lab-ort", "--max-latency-ms", "100", "--budget", "6", "--latency-samples", "3",
              "--seeds", "1", "--accuracy-table", str(SHARED / "nb201_accuracy.csv"), "--train-devices",
              "1080ti_1,pixel3"]
    capsys.readouterr()
    assert main([*search, "--store", str(lab / "lab.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds lab-ort's nb201 latencies measured with 2 different settings" in err, err
    exported = _export(lab, "batch-1", tmp_path / "batch-1.parquet")
    assert main([*search, "--latency-table", str(exported)]) == 0  # the file the line names searches
    assert "true optimum under the limit" in capsys.readouterr().out


def test_an_export_file_joining_two_runtime_options_is_refused(lab, tmp_path, capsys):
    """The export's settings columns (threads, cores, batch_size, ...) leave out the runtime options: two campaigns
    of lab-ort differing only in onnxruntime's graph optimisation, joined into one file, read as one setting and
    adapt took the median of both. The export now carries each device's whole identity (settings, JSON)."""
    # no-opt.db: batch-1, then campaign no-opt of lab-ort with graph_optimization = disable (run in the fixture)
    parts = [pq.read_table(_export(lab, name, tmp_path / f"{name}.parquet", store="no-opt.db"))
             for name in ("batch-1", "no-opt")]
    pq.write_table(pa.concat_tables(parts), tmp_path / "joined.parquet")
    capsys.readouterr()
    assert main(["adapt", str(lab / "model.pt"), "--device", "lab-ort", "--measurements",
                 str(tmp_path / "joined.parquet"), "--out", str(tmp_path / "joined.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("joined.parquet holds lab-ort's latencies measured with 2 different settings: "
                                     "10 with runtime.options.graph_optimization = None (campaign batch-1); 4 with "
                                     "runtime.options.graph_optimization = disable (campaign no-opt)") in err, err
    assert not (tmp_path / "joined.pt").exists()
