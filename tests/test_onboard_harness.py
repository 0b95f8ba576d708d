"""`hwl onboard` through the real harness: a local onnxruntime device, a tiny budget, a store
holding an interrupted onboarding batch, and bad input."""
from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from harness.campaign import CampaignSpec, onboarding_prefix, plan_campaign
from harness.cli import main
from harness.store import Store
from spaces import resolve_archs
from tests.campaign_helpers import exported_models, hwl, kill_leftovers, write_profile

pytest.importorskip("ray")
PRE_PLANNED = ["11", "1462", "8000"]


def _onboard_with_ray(capsys, monkeypatch, ray_tmp, *args):
    """`hwl onboard ARGS` run in this process (its imports and pretraining done once for the file, not in a process
    each), any Ray it starts in ``ray_tmp`` and killed after it: (exit status, stdout, stderr)."""
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)  # Ray's daemons inherit it, so kill_leftovers finds them
    capsys.readouterr()
    try:
        status = main(["onboard", *map(str, args)])
    finally:
        kill_leftovers(ray_tmp)
        monkeypatch.delenv("RAY_TMPDIR")
    said = capsys.readouterr()
    return status, said.out, said.err


@pytest.mark.slow
def test_onboard_resumes_an_interrupted_batch_and_writes_its_files(tmp_path, capsys, monkeypatch):
    dev = write_profile(tmp_path, "onb-ort")
    db = tmp_path / "lab.db"
    # An onboarding that died mid-batch: its campaign is planned, nothing measured yet.
    with Store(db) as st:
        plan_campaign(st, CampaignSpec(space="nb201", archs=tuple(PRE_PLANNED), devices=(str(dev),),
                                       name=onboarding_prefix("onb-ort", "nb201") + "interrupted"))
    ray_tmp = tempfile.mkdtemp(prefix="hwlo-", dir="/tmp")
    out = tmp_path / "predictor.pt"
    try:
        status, said, err = _onboard_with_ray(
            capsys, monkeypatch, ray_tmp, dev, "--space", "nb201", "--budget", "6", "--initial", "4", "--batch-size",
            "2", "--candidates", "random:200", "--store", db, "--out", out, "--artifacts", tmp_path / "art",
            "--canary-every", "0")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)  # Ray's session files (300 KB a run)
    assert status == 0, err
    # the interrupted batch held nothing measured: this run spent all 6 (it said 3 already in the store)
    assert "6 of 6 measurements spent (0 already in the store" in said
    assert "estimated Spearman rho on the" in said and "resembles most:" in said

    con = sqlite3.connect(db)
    rows = con.execute("SELECT j.arch, count(r.id), sum(r.accepted) FROM jobs j JOIN results r ON r.job_id = j.id "
                       "WHERE j.device = 'onb-ort' GROUP BY j.arch").fetchall()
    archs = {a for a, _, _ in rows}
    assert len(archs) == 6 and set(PRE_PLANNED) <= archs  # the interrupted batch finished, then 3 more
    assert all(accepted == 1 for _, _, accepted in rows)
    names = [r[0] for r in con.execute("SELECT name FROM campaigns ORDER BY id")]
    assert len(names) == 3 and all(n.startswith("onboard:onb-ort:nb201:") for n in names)
    con.close()

    report = json.loads(out.with_suffix(".json").read_text())
    assert report["measurements_spent"] == 6 and report["already_in_store"] == 0
    assert report["campaigns"] == names  # the interrupted batch's campaign too
    assert report["estimated_rho"]["low"] <= report["estimated_rho"]["rho"] <= report["estimated_rho"]["high"]
    table = pd.read_parquet(out.with_suffix(".parquet"))
    outside = set(map(int, PRE_PLANNED)) - set(resolve_archs("nb201", "random:200", seed=0))
    assert len(table) == 200 + len(outside)  # the candidates, and measured archs outside them
    assert {"arch", "arch_str", "device", "predicted_ms", "uncertainty", "measured_ms"} <= set(table.columns)
    assert "latency_ms" not in table and (table["predicted_ms"] > 0).all() and table["measured_ms"].notna().sum() == 6

    # the same command again measures nothing and reports the same estimate; a smaller budget says so plainly
    ray_tmp = tempfile.mkdtemp(prefix="hwlo-", dir="/tmp")
    status, said, err = _onboard_with_ray(
        capsys, monkeypatch, ray_tmp, dev, "--space", "nb201", "--budget", "4", "--initial", "4", "--batch-size", "2",
        "--candidates", "random:200", "--store", db, "--out", tmp_path / "again.pt", "--artifacts", tmp_path / "art",
        "--canary-every", "0")
    assert status == 0, err
    assert "nothing measured: the store already holds 6 of the device's measurements" in said
    assert not any(Path(ray_tmp).iterdir()), "Ray was started for an onboarding with nothing to measure"
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert json.loads((tmp_path / "again.json").read_text())["estimated_rho"] == report["estimated_rho"]

    # the predictor file is an `hwl adapt` model
    assert main(["predict", str(out), "--device", "onb-ort", "--archs", "0,1,2", "--out", str(tmp_path / "p.csv")]) == 0


@pytest.mark.slow
def test_an_arch_failing_when_measured_again_after_a_drift_is_failed_not_measured_a_third_time(tmp_path, capsys,
                                                                                              monkeypatch,
                                                                                              model_cache):
    """A resumed onboarding measures a store's drifted arch again first; when that measurement failed, the arch was
    neither measured nor failed, so the loop picked it and measured it a third time (and its failure was not
    counted against the budget)."""
    from tests.campaign_helpers import FAST_POLICY
    from tests.test_onboard_store import _measure

    # every model too slow for the policy: each attempt fails at once (TooSlowForPolicy), the device stays active
    slow = {**FAST_POLICY, "window_min_runs": 10**6, "window_max_s": 30, "window_timeout_s": 30, "model_timeout_s": 4}
    dev = write_profile(tmp_path, "onb-slow", policy=slow)
    db = tmp_path / "lab.db"
    with Store(db) as st:  # written as a campaign writes them: 5 and 11 measured, 1462 while the device drifted
        _measure(st, dev, ["5", "11"], [2.0, 3.0], name="calm", device="onb-slow")
        calm = st.db.execute("SELECT max(id) FROM results").fetchone()[0]
        _measure(st, dev, ["1462"], [4.0], name="loaded", device="onb-slow")
        assert st.flag_results_since(st.campaign("loaded")["id"], "onb-slow", calm, "canary_drift") == (1, 1)
    # 1462's model is there already: what onboarding measures is asked here, not its export (a Ray worker's torch)
    exported_models(model_cache, tmp_path / "art", "1462")
    ray_tmp = tempfile.mkdtemp(prefix="hwlo-", dir="/tmp")
    try:
        status, _, err = _onboard_with_ray(capsys, monkeypatch, ray_tmp, dev, "--space", "nb201", "--budget", "3",
                                           "--candidates", "5,11,1462", "--store", db, "--out", tmp_path / "p.pt",
                                           "--artifacts", tmp_path / "art", "--canary-every", "0")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert status == 0, err
    with Store(db) as st:
        jobs = st.db.execute("SELECT count(*) FROM jobs WHERE arch = '1462'").fetchone()[0]
    assert jobs == 2, err  # the drifted measurement and the one again; not a third
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["failed"] == ["1462"] and report["measurements_spent"] == 3


def _onboard(capsys, *args):
    """`hwl onboard ARGS` run in this process, where the command's imports (torch, sklearn: seconds in
    each new process) are done once: (exit status, stderr)."""
    capsys.readouterr()
    status = main(["onboard", *map(str, args)])
    return status, capsys.readouterr().err


def test_onboard_bad_input(tmp_path, capsys):
    r = hwl("onboard", "no-such-device", "--space", "nb201", "--store", tmp_path / "x.db", "--out", tmp_path / "p.pt")
    assert r.returncode == 2 and "no-such-device" in r.stderr  # the command itself; the others in this process
    dev = write_profile(tmp_path, "onb-bad")
    rc, err = _onboard(capsys, dev, "--space", "nb201", "--budget", "1", "--out", tmp_path / "p.pt")
    assert rc == 2 and "--budget must be at least 2, got 1: a predictor adapted on one latency" in err
    for target in ("1", "1.5", "0", "nan"):  # 1 was taken, and the estimate never reaches it: a stop that never came
        rc, err = _onboard(capsys, dev, "--space", "nb201", "--target-rho", target, "--store", tmp_path / "x.db",
                           "--out", tmp_path / "p.pt")  # accepted, it would onboard into tmp_path, not the checkout
        assert rc == 2 and f"--target-rho must be in (0, 1), got {float(target)}: the estimated rho stays" in err
    rc, err = _onboard(capsys, dev, "--space", "nb201", "--method", "nope", "--store", tmp_path / "x.db",
                       "--out", tmp_path / "p.pt")
    assert rc == 2 and "valid methods" in err
    rc, err = _onboard(capsys, dev, "--space", "nb201", "--method", "flops", "--store", tmp_path / "x.db",
                       "--out", tmp_path / "p.pt")
    assert rc == 2 and "method 'flops' ranks architectures but does not predict" in err
    rc, err = _onboard(capsys, dev, "--space", "nb201", "--initial", "0", "--store", tmp_path / "x.db",
                       "--out", tmp_path / "p.pt")
    assert rc == 2 and "--initial must be at least 1, got 0" in err
    not_store = tmp_path / "notes.db"
    not_store.write_text("not a database")
    rc, err = _onboard(capsys, dev, "--space", "nb201", "--store", not_store, "--out", tmp_path / "p.pt")
    assert rc == 2 and "not an hwl store" in err
    for bad in ("zz,1", "@" + str(not_store)):  # an unknown arch string, a file of them
        rc, err = _onboard(capsys, dev, "--space", "nb201", "--candidates", bad, "--store", tmp_path / "new.db",
                           "--out", tmp_path / "p.pt")
        assert rc == 2 and "NB201" in err and "arch string" in err
        assert not (tmp_path / "new.db").exists()  # refused before a store was made
    # a store device without HELP's reference architectures: method help cannot pretrain (a traceback before)
    table = tmp_path / "lab.csv"
    pd.DataFrame({"arch_index": range(400), "device": "labdev", "latency_ms": [1.0 + i / 100 for i in range(400)]}) \
        .to_csv(table, index=False)
    assert main(["data", "import", str(table), "--store", str(tmp_path / "help.db")]) == 0
    rc, err = _onboard(capsys, dev, "--space", "nb201", "--method", "help", "--budget", "4", "--store",
                       tmp_path / "help.db", "--out", tmp_path / "p.pt")
    assert rc == 2 and "Traceback" not in err  # main() would raise an error it does not know, in this process too
    assert "method help cannot pretrain" in err and "'labdev' lacks latencies of HELP's reference" in err
    with Store(tmp_path / "help.db") as s:  # the imported table is still there
        assert s.db.execute("SELECT count(*) FROM imported").fetchone()[0] == 400
    assert not (tmp_path / "p.pt").exists()


def test_one_candidate_is_refused_before_the_pretraining(tmp_path, capsys, monkeypatch):
    """`--candidates 5` on a store holding nothing of the device pretrained (a minute on a loaded machine), then said
    'need at least 2 candidate architectures, got 1', naming no flag."""
    from harness import onboard

    monkeypatch.setattr(onboard.registry, "get_method", lambda *a, **k: pytest.fail("pretrained before the check"))
    dev = write_profile(tmp_path, "onb-one")
    rc, err = _onboard(capsys, dev, "--space", "nb201", "--candidates", "5", "--budget", "2", "--store",
                       tmp_path / "lab.db", "--out", tmp_path / "p.pt")
    assert rc == 2 and "--candidates names 1 architecture and the store holds no other one measured on onb-one" in err
    assert err.count("\n") == 1 and not (tmp_path / "p.pt").exists()


def test_onboard_help_offers_only_the_methods_it_takes():
    # the rank-only baselines were listed as choices, then refused with "ranks architectures but ..."
    r = hwl("onboard", "--help")
    assert r.returncode == 0
    listed = " ".join(r.stdout.split()).split("--method METHOD")[-1].split("--candidates")[0]
    assert "phys_bayes" in listed and "tl_et" in listed
    for name in ("copy", "flops", "params"):
        assert name not in listed


def test_onboard_help_gives_the_canary_default(capsys):
    """`hwl onboard --help` said --canary-every was "jobs between drift canaries (0: off)": not how many a plain
    onboarding takes."""
    with pytest.raises(SystemExit):
        main(["onboard", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "--canary-every CANARY_EVERY jobs between drift canaries (default 50; 0: off)" in said, said


def test_onboard_strategy_flag(tmp_path, capsys):
    from harness.cli.onboard import loop_settings

    # the command had no way to choose the picks: OnboardSettings(strategy=...) from Python only
    assert loop_settings(strategy="design").for_method(has_posterior=True).strategy == "design"
    chosen = loop_settings(initial=4, batch_size=2, strategy="random").for_method(has_posterior=True)
    assert (chosen.strategy, chosen.n_initial, chosen.batch_size) == ("random", 4, 2)
    default = loop_settings().for_method(has_posterior=True)
    assert (default.strategy, default.n_initial) == ("loop", 3)
    with pytest.raises(SystemExit) as refused:  # argparse's own refusal, exit status 2
        main(["onboard", str(write_profile(tmp_path, "onb-flag")), "--space", "nb201", "--strategy", "greedy",
              "--store", str(tmp_path / "x.db"), "--out", str(tmp_path / "p.pt")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--strategy" in err and "'greedy'" in err and "design" in err
    assert not (tmp_path / "x.db").exists()
