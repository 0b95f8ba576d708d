"""What an onboarding takes from the store as already measured: only the device's latencies
measured with the settings it measures with now (no Ray: results are written as a campaign would)."""
from __future__ import annotations

import logging
import os

from harness.campaign import CampaignSpec, onboarding_prefix, plan_campaign
from harness.onboard import batch_name, comparable_rows, failed_archs, measured_latencies, \
    only_drifted, pretrain_tables, unfinished_campaigns, warn_left_out
from harness.profiles import load_profiles
from harness.store import Store
from predictors import data
from tests.campaign_helpers import write_profile


def _profiles(tmp_path):
    """The device as onboarding measures it (1 thread on core 1) and as an older campaign did (2 on 0, 1)."""
    now = write_profile(tmp_path, "onb-ort")
    (tmp_path / "old").mkdir()
    old = write_profile(tmp_path / "old", "onb-ort", cores=(0, 1))
    old.write_text(old.read_text().replace("threads = 1", "threads = 2"))
    return now, old


def _measure(store, profile_path, archs, labels, *, name, fail=(), device="onb-ort", space="nb201"):
    cid, _, _ = plan_campaign(store, CampaignSpec(space=space, archs=tuple(archs), devices=(str(profile_path),),
                                                  name=name))
    for job, arch, _ in store.queued_jobs(cid, device):
        attempt = store.start_attempt(job)
        if arch in fail:
            store.finish_attempt(job, attempt, record={"outcome": "runtime_error"}, job_state="failed")
            continue
        label = labels[archs.index(arch)]
        store.finish_attempt(job, attempt, job_state="done", record={
            "outcome": "ok", "flags": [], "samples_ns": [[label * 1e6]] * 3,
            "stats": {"label_ms": label, "median_ms": label, "iqr_over_median": 0.01}})


def test_only_latencies_measured_with_the_profiles_settings_count(tmp_path, caplog):
    now, old = _profiles(tmp_path)
    with Store(tmp_path / "lab.db") as st:
        _measure(st, old, ["11", "1462", "8000", "9"], [3.0, 4.0, 5.0, 6.0], name="older-campaign")
        _measure(st, old, ["12"], [0], name=onboarding_prefix("onb-ort", "nb201") + "old", fail=("12",))
        _measure(st, now, ["11", "5"], [7.0, 8.0], name="mine")
        st.add_imported("nb201", [("6", "onb-ort", 9.0)], source="p.parquet")
        profile = load_profiles([str(now)])[0]
        assert measured_latencies(st, "nb201", profile) == {11: 7.0, 5: 8.0}  # not a median with 3.0
        _, left_out = comparable_rows(st, "nb201", profile)
        assert failed_archs(st, "nb201", profile) == []  # failed with other settings: may be tried again
    assert left_out == {"runtime.cores, runtime.threads": 4, "imported, settings unknown": 1}
    with caplog.at_level(logging.WARNING):
        warn_left_out(left_out, "onb-ort")
    assert ("onb-ort: left out 5 latencies of the store measured with other settings than the profile's "
            "(4 where runtime.cores, runtime.threads differ; 1 with imported, settings unknown)") in caplog.text


def test_a_batch_with_other_settings_is_another_campaign(tmp_path):
    now, old = _profiles(tmp_path)
    (a,), (b,) = load_profiles([str(now)]), load_profiles([str(old)])
    assert batch_name(a, "nb201", ["1", "2"]) != batch_name(b, "nb201", ["1", "2"])
    assert batch_name(a, "nb201", ["1", "2"]) == batch_name(a, "nb201", ["1", "2"])
    assert batch_name(a, "nb201", ["1", "2"]).startswith("onboard:onb-ort:nb201:")


def test_a_store_device_measured_with_two_settings_is_left_out_of_pretraining(tmp_path, caplog):
    # the store's table is the median over every setting: onb-ort's archs 0-119 on 1 thread and 100-219 on 2 were
    # one pretraining device, 20 of its latencies halfway between the two settings
    now, old = _profiles(tmp_path)
    archs = [str(a) for a in range(220)]
    with Store(tmp_path / "lab.db") as st:
        _measure(st, now, archs[:120], [1.0 + a / 100 for a in range(120)], name="one-thread")
        assert "onb-ort" in pretrain_tables("nb201", st, "new-device")  # one setting: pretrained on
        _measure(st, old, archs[100:], [0.5 + a / 200 for a in range(100, 220)], name="two-threads")
        with caplog.at_level(logging.WARNING):
            tables = pretrain_tables("nb201", st, "new-device")
        assert len(st.latency_table("nb201")) == 240  # nothing stored is lost
    assert "onb-ort" not in tables and "raspi4" in tables  # the public tables stay
    assert "not pretraining on onb-ort: measured with more than one setting in the store" in caplog.text


def test_a_lab_device_named_as_a_public_one_is_not_merged_with_it_arch_by_arch(tmp_path, caplog):
    # A lab's own phone measured as 'pixel3' (30 archs at 0.5 ms) became, in onboarding's pretraining, one device
    # with HELP's pixel3: the lab's 30 latencies in place of HELP's (3.6-17 ms) and HELP's 15,595 others beside them.
    (tmp_path / "lab").mkdir()
    phone = write_profile(tmp_path / "lab", "pixel3")
    public = data.help_table("nb201")
    help_pixel3 = public[public["device"] == "pixel3"].set_index("arch")["latency_ms"].sort_index()
    help_raspi4 = public[public["device"] == "raspi4"].set_index("arch")["latency_ms"].sort_index().iloc[:150]
    with Store(tmp_path / "lab.db") as st:
        st.add_imported("nb201", [(str(a), "raspi4", ms) for a, ms in help_raspi4.items()], source="nb201_latency.pq")
        _measure(st, phone, [str(a) for a in range(30)], [0.5] * 30, name="few", device="pixel3")
        with caplog.at_level(logging.WARNING):
            few = pretrain_tables("nb201", st, "new-device")
        _measure(st, phone, [str(a) for a in range(30, 120)], [0.7] * 90, name="more", device="pixel3")
        more = pretrain_tables("nb201", st, "new-device")
    assert few["pixel3"].sort_index().equals(help_pixel3)  # too few of the lab's: HELP's pixel3 alone
    assert sorted(set(more["pixel3"])) == [0.5, 0.7] and len(more["pixel3"]) == 120  # the lab's alone
    assert few["raspi4"].sort_index().equals(public[public["device"] == "raspi4"].set_index("arch")["latency_ms"]
                                             .sort_index())  # an import of the public table is that table
    said = [r.getMessage() for r in caplog.records if "both name" in r.getMessage()]
    assert len(said) == 2 and all("both name pixel3," in line for line in said)
    assert "the public table's (the store has 30 latencies" in said[0] and "the store's (120 latencies)" in said[1]


def test_onboarding_a_device_the_store_holds_as_imported_is_one_line_up_front(tmp_path, capsys, caplog):
    # An export imported on another machine (device onb-ort, settings unknown), then `hwl onboard onb-ort` there:
    # it pretrained, warned 'left out 2 latencies ... (2 with imported, settings unknown)' as if it went on without
    # them, then refused its first batch. The refusal now comes first, alone.
    from harness.cli import main

    now, _ = _profiles(tmp_path)
    with Store(tmp_path / "lab.db") as st:
        st.add_imported("nb201", [("5", "onb-ort", 2.0), ("6", "onb-ort", 3.0)], source="onb-ort.parquet")
    with caplog.at_level(logging.INFO):
        assert main(["onboard", str(now), "--space", "nb201", "--budget", "4", "--candidates", "0-19",
                     "--store", str(tmp_path / "lab.db"), "--out", str(tmp_path / "p.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device onb-ort is in" in err and "as an imported nb201 table (2 from " \
        "onb-ort.parquet; settings unknown)" in err and "nothing planned" in err
    assert "left out" not in caplog.text and "pretrain" not in caplog.text
    with Store(tmp_path / "lab.db", readonly=True) as st:
        assert st.query("SELECT count(*) AS n FROM campaigns")["n"].iloc[0] == 0


def test_latencies_measured_while_the_device_drifted_are_not_taken_as_measured(tmp_path):
    # A canary off its baseline flags the results since the last good one (canary_drift), yet they stay
    # accepted. Onboarding must not fit on them: 11 was measured again cleanly (that value counts), 1462
    # has only its drifted latency (measured again by onboarding, not taken as is).
    now, _ = _profiles(tmp_path)
    with Store(tmp_path / "lab.db") as st:
        _measure(st, now, ["5"], [8.0], name="calm")
        calm = st.db.execute("SELECT max(id) FROM results").fetchone()[0]
        _measure(st, now, ["11", "1462"], [3.0, 4.0], name="loaded")
        loaded = st.campaign("loaded")["id"]
        assert st.flag_results_since(loaded, "onb-ort", calm, "canary_drift") == (2, 2)
        _measure(st, now, ["11"], [7.0], name="again")
        profile = load_profiles([str(now)])[0]
        assert measured_latencies(st, "nb201", profile) == {5: 8.0, 11: 7.0}  # was {5: 8.0, 11: 5.0, 1462: 4.0}
        rows, _ = comparable_rows(st, "nb201", profile)
        assert only_drifted("nb201", rows) == [1462]
        # Measured again and drifted again (on a machine whose canary moves more than its tolerance on most
        # batches): the median of both is kept, not left out as a failure nor measured a third time.
        again = st.campaign("again")["id"]
        _measure(st, now, ["1462"], [6.0], name="again2")
        assert st.flag_results_since(st.campaign("again2")["id"], "onb-ort",
                                     st.db.execute("SELECT max(id) FROM results WHERE job_id IN (SELECT id FROM "
                                                   "jobs WHERE campaign_id = ?)", (again,)).fetchone()[0],
                                     "canary_drift") == (1, 1)
        assert measured_latencies(st, "nb201", profile) == {5: 8.0, 11: 7.0, 1462: 5.0}
        rows, _ = comparable_rows(st, "nb201", profile)
    assert only_drifted("nb201", rows) == []


def test_train_adapt_and_pretraining_on_a_store_warn_of_drifted_latencies(tmp_path, caplog):
    # `hwl train/adapt/evaluate/search --store` and onboarding's pretraining read a table as it stands
    # (they cannot measure again): drift-flagged latencies are used, and a warning says how many of whose.
    now, _ = _profiles(tmp_path)
    archs = [str(a) for a in range(120)]
    with Store(tmp_path / "lab.db") as st:
        _measure(st, now, archs[:118], [1.0 + a / 100 for a in range(118)], name="calm")
        calm = st.db.execute("SELECT max(id) FROM results").fetchone()[0]
        _measure(st, now, archs[118:], [3.0, 4.0], name="loaded")
        st.flag_results_since(st.campaign("loaded")["id"], "onb-ort", calm, "canary_drift")
        with caplog.at_level(logging.WARNING):
            assert "onb-ort" in pretrain_tables("nb201", st, "new-device")
    assert (f"pretraining on store {tmp_path / 'lab.db'}: 2 latencies were measured while the device drifted "
            "(canary_drift: its drift canary was off its baseline), read as measured: onb-ort 2") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(data.load_table("nb201", store=tmp_path / "lab.db")) == 120
    assert f"store {tmp_path / 'lab.db'}: 2 latencies were measured while the device drifted" in caplog.text


def test_one_drifted_latency_is_one_latency_in_the_warning(caplog):
    # seen after an upgrade walk: hwl adapt --store said "1 latencies were measured while the device drifted"
    with caplog.at_level(logging.WARNING):
        data.warn_drifted({"local-ort-1t": 1}, "store lab.db")
    assert "store lab.db: 1 latency was measured while the device drifted" in caplog.text


def test_adapt_and_train_on_a_store_warn_only_of_the_drifted_latencies_of_the_devices_they_read(tmp_path, caplog):
    # `hwl adapt --device onb-ort --store lab.db` named every device's drifted latencies ("onb-ort 2, other-ort 2"),
    # as if the other device's fed the fit; it reads onb-ort's alone, and `hwl train --devices` those it names.
    from harness.cli.adapt import adapt
    from harness.cli.train import train

    now, _ = _profiles(tmp_path)
    (tmp_path / "other").mkdir()
    other = write_profile(tmp_path / "other", "other-ort")
    archs = [str(a) for a in range(40)]
    with Store(tmp_path / "lab.db") as st:
        for path, device in ((now, "onb-ort"), (other, "other-ort")):
            _measure(st, path, archs[:38], [1.0 + a / 100 for a in range(38)], name=f"calm-{device}", device=device)
            calm = st.db.execute("SELECT max(id) FROM results").fetchone()[0]
            _measure(st, path, archs[38:], [3.0, 4.0], name=f"loaded-{device}", device=device)
            st.flag_results_since(st.campaign(f"loaded-{device}")["id"], device, calm, "canary_drift")
    model = train(space="nb201", devices=["raspi4", "pixel3"], method="hwl_ridge", n_pretrain=50, out=tmp_path / "m.pt")
    with caplog.at_level(logging.WARNING):
        _, n = adapt(model=model, device="onb-ort", store=tmp_path / "lab.db", out=tmp_path / "a.pt")
        train(space="nb201", devices=["onb-ort"], method="hwl_ridge", store=tmp_path / "lab.db", out=tmp_path / "t.pt")
    drift = [r.getMessage() for r in caplog.records if "drifted" in r.getMessage()]
    assert n == 40 and len(drift) == 2, drift
    assert all(line.endswith("read as measured: onb-ort 2; measure those archs again for a clean table")
               for line in drift), drift


def test_a_drifted_latency_measured_again_cleanly_gives_way_to_the_clean_one_in_every_table(tmp_path, caplog):
    """Onboarding fits an arch measured again after a drift on its clean latency alone, but the predictor commands'
    `--store`, the Parquet export's readers and the wide export took the median of both (11: 5.0 ms from a drifted
    3.0 and a clean 7.0; seen on a lab's store after `hwl onboard` measured its 24 drifted archs again, where `hwl
    adapt --store` also still warned of 24 drifted latencies and said to measure them again). Every table now reads
    the clean latency, and only an arch measured while drifting alone keeps a drifted one (1462) and is warned of."""
    from harness.cli import main

    now, _ = _profiles(tmp_path)
    db = tmp_path / "lab.db"
    with Store(db) as st:
        _measure(st, now, ["5"], [8.0], name="calm")
        calm = st.db.execute("SELECT max(id) FROM results").fetchone()[0]
        _measure(st, now, ["11", "1462"], [3.0, 4.0], name="loaded")
        assert st.flag_results_since(st.campaign("loaded")["id"], "onb-ort", calm, "canary_drift") == (2, 2)
        _measure(st, now, ["11"], [7.0], name="again")
        assert measured_latencies(st, "nb201", load_profiles([str(now)])[0]) == {5: 8.0, 11: 7.0}
    want = {5: 8.0, 11: 7.0, 1462: 4.0}
    with caplog.at_level(logging.WARNING):
        stored = data.load_table("nb201", store=db)
    assert dict(zip(stored["arch"], stored["latency_ms"])) == want
    assert "read as measured: onb-ort 1;" in caplog.text
    for name in ("onb.parquet", "onb_help.csv"):
        assert main(["campaign", "export", "--store", str(db), "--device", "onb-ort", "--out",
                     str(tmp_path / name)]) == 0
        exported = data.read_table(tmp_path / name, "nb201")
        assert dict(zip(exported["arch"], exported["latency_ms"])) == want, name


def test_an_imported_table_named_as_a_public_device_is_told_to_be_imported_under_its_own_name(tmp_path, caplog):
    """A lab's table imported as 'raspi4' (its own Pi, 24 latencies) beside the public raspi4: onboarding pretrained
    on the public one, as it should, but said to 'give the profile a name of its own to pretrain on both', which for
    an imported table changes nothing. It now says to import the table under another name."""
    public = data.help_table("nb201")
    theirs = public[public["device"] == "raspi4"].set_index("arch")["latency_ms"].sort_index()
    with Store(tmp_path / "lab.db") as st:
        st.add_imported("nb201", [(str(a), "raspi4", ms * 2) for a, ms in theirs.iloc[:24].items()], source="pi.csv")
        with caplog.at_level(logging.WARNING):
            tables = pretrain_tables("nb201", st, "new-device")
    assert tables["raspi4"].sort_index().equals(theirs)  # too few of the lab's: the public table whole
    (said,) = [r.getMessage() for r in caplog.records if "both name" in r.getMessage()]
    assert said.endswith("raspi4: the public table's (the store has 24 latencies, fewer than 100); import the table "
                         "under a name of its own (hwl data import --device NAME) to pretrain on both"), said


def test_onboarding_with_hwl_ridge_on_archs_no_table_holds_is_one_line_not_one_latency_for_all(tmp_path, capsys):
    """`hwl onboard local-ort-1t --space fbnet --candidates random:20 --method hwl_ridge` wrote a table of one
    predicted latency for all 20 candidates ('estimated Spearman rho 0.000 (90 % interval 0.000 to 0.000)')."""
    from harness.cli import main
    from spaces import fbnet

    now, _ = _profiles(tmp_path)
    candidates = fbnet.sample(8, 3)
    with Store(tmp_path / "lab.db") as st:  # measured already: the onboarding measures nothing, starts no Ray
        _measure(st, now, candidates[:3], [1.0, 2.0, 3.0], name="earlier", space="fbnet")
    (tmp_path / "candidates.txt").write_text("\n".join(candidates) + "\n")
    assert main(["onboard", str(now), "--space", "fbnet", "--budget", "3", "--method", "hwl_ridge", "--candidates",
                 f"@{tmp_path / 'candidates.txt'}", "--store", str(tmp_path / "lab.db"),
                 "--out", str(tmp_path / "p.pt")]) == 2
    assert ("error: method hwl_ridge cannot adapt to onb-ort: hwl_ridge predicts from the train devices' latencies of "
            "an architecture, and none of the 3 measured ones") in capsys.readouterr().err
    assert not (tmp_path / "p.parquet").exists()


def test_an_interrupted_onboarding_is_finished_only_for_its_own_device(tmp_path):
    """The batches of an onboarding of pi-1 left queued were found for pi_1 too (SQL's LIKE reads '_' as any
    character), whose `hwl onboard` would then have run pi-1's measurements before its own."""
    profile = write_profile(tmp_path, "pi-1")
    with Store(tmp_path / "lab.db") as store:
        cid, _, _ = plan_campaign(store, CampaignSpec(space="nb201", archs=("1", "2"), devices=(str(profile),),
                                                      name=onboarding_prefix("pi-1", "nb201") + "0123456789"))
        assert unfinished_campaigns(store, "nb201", "pi-1") == [cid]
        assert unfinished_campaigns(store, "nb201", "pi_1") == []


def test_outputs_given_with_a_tilde_after_the_equals_sign_go_home(tmp_path, monkeypatch, capsys):
    """`hwl onboard ... --out=~/models/p.pt` (no shell expands that tilde) made ~/models, wrote the model into a
    folder named '~' in the working folder, and ended in a traceback writing the table (pandas expands the tilde,
    the final rename did not), leaving a partial file in ~/models."""
    from harness.cli import main

    now, _ = _profiles(tmp_path)
    with Store(tmp_path / "lab.db") as st:  # measured already: the onboarding measures nothing, starts no Ray
        _measure(st, now, ["5", "11", "1462"], [1.0, 2.0, 3.0], name="earlier")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert main(["onboard", str(now), "--space", "nb201", "--budget", "3", "--candidates", "5,11,1462,8000",
                 "--store", str(tmp_path / "lab.db"), "--out=~/models/p.pt", "--table=~/models/t.parquet"]) == 0
    assert sorted(f.name for f in (tmp_path / "home" / "models").iterdir()) == ["p.json", "p.pt", "t.parquet"]
    assert not any((tmp_path / "work").iterdir())


# `hwl onboard` that stops itself (SIGSTOP) when it makes the table's folder as it writes its files (the second
# time: the first is the check of --table before any work), after the model is written; then it is killed.
_STOPS_WRITING = """
import os, signal, sys
from harness.cli import main
made = []
def stop_at_the_table(event, args):
    if event == "os.mkdir" and os.fspath(args[0]) == sys.argv[1]:
        made.append(args[0])
        if len(made) == 2:
            os.kill(os.getpid(), signal.SIGSTOP)
sys.addaudithook(stop_at_the_table)
sys.exit(main(sys.argv[2:]))
"""


def test_an_onboarding_killed_while_it_writes_its_files_never_leaves_a_new_model_beside_an_old_table(tmp_path,
                                                                                                  monkeypatch):
    """The model, the table and the report were written one after another: a kill between them left the new model
    beside the last run's table and report, which a reader took for its own."""
    # each onboarding here looks for partial files, as each `hwl onboard` process does, not once a minute
    monkeypatch.setattr("harness.paths.PARTIAL_SWEEP_INTERVAL_S", 0.0)
    import subprocess
    import sys
    import time

    import psutil

    from harness.cli import main

    now, _ = _profiles(tmp_path)
    with Store(tmp_path / "lab.db") as st:  # measured already: the onboarding measures nothing, starts no Ray
        _measure(st, now, ["5", "11", "1462"], [1.0, 2.0, 3.0], name="earlier")
    files = {"model": tmp_path / "p.pt", "table": tmp_path / "tables" / "t.parquet", "report": tmp_path / "p.json"}
    args = ["onboard", str(now), "--space", "nb201", "--budget", "3", "--store", str(tmp_path / "lab.db"),
            "--out", str(files["model"]), "--table", str(files["table"])]
    assert main([*args, "--candidates", "5,11,1462,8000", "--method", "simple_reference"]) == 0
    old = {k: p.read_bytes() for k, p in files.items()}
    args += ["--candidates", "5,11,1462,9000"]  # another table, report and model (the default method's)
    child = subprocess.Popen([sys.executable, "-c", _STOPS_WRITING, str(files["table"].parent), *args],
                             env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while psutil.Process(child.pid).status() != psutil.STATUS_STOPPED:
            assert child.poll() is None and time.monotonic() < deadline, "the onboarding never wrote its table"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    state = {k: "gone" if not p.exists() else "old" if p.read_bytes() == old[k] else "new" for k, p in files.items()}
    assert state["model"] != "new" or "old" not in state.values(), state
    assert main(args) == 0  # the next run writes the whole new set, and takes away the killed run's partial files
    assert all(p.read_bytes() != old[k] for k, p in files.items())
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "lab.db" not in str(p)) == [
        "onb-ort.toml", "onb-ort.toml", "p.json", "p.pt", "t.parquet"]
