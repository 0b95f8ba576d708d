"""`hwl train/adapt/predict/evaluate` end to end on small tables, and their bad-input errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.model_file import save_model
from predictors import data, registry
from predictors.base import TrainTables
from spaces import fbnet, nb201


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A train table of 3 HELP devices and a 'new device' table (raspi4 renamed my_pi), 400 archs."""
    root = tmp_path_factory.mktemp("pred_cli")
    help_table = data.help_table("nb201")
    small = help_table[help_table["arch"] < 400]
    train = small[small["device"].isin(["1080ti_1", "silver_4114", "pixel3"])].rename(columns={"arch": "arch_index"})
    train.to_parquet(root / "train.parquet")
    mine = small[small["device"] == "raspi4"]
    new = pd.DataFrame({"arch_str": [nb201.to_string(a) for a in mine["arch"]], "device": "my_pi",
                        "latency_ms": mine["latency_ms"].to_numpy()})
    new.to_parquet(root / "new.parquet")
    new.iloc[:12].to_csv(root / "my_pi_12.csv", index=False)
    return root


@pytest.mark.slow
def test_train_adapt_predict_end_to_end(tables, capsys):
    root = tables
    assert main(["train", "--space", "nb201", "--table", str(root / "train.parquet"), "--out",
                 str(root / "model.pt")]) == 0
    assert main(["adapt", str(root / "model.pt"), "--device", "my_pi", "--measurements",
                 str(root / "my_pi_12.csv"), "--out", str(root / "adapted.pt")]) == 0
    assert "with 12 measurements" in capsys.readouterr().out
    assert main(["adapt", str(root / "adapted.pt"), "--device", "my_pi", "--measurements",
                 str(root / "my_pi_12.csv"), "--out", str(root / "again.pt")]) == 2
    err = capsys.readouterr().err
    assert "adapted.pt is already adapted to 'my_pi'; adapt the pretrained model" in err
    assert "for a predictor from `hwl onboard`, run that onboarding again with a larger --budget" in err
    assert main(["predict", str(root / "adapted.pt"), "--device", "my_pi", "--archs", "0,1,2,3,399",
                 "--out", str(root / "pred.parquet")]) == 0
    pred = pd.read_parquet(root / "pred.parquet")
    assert f"wrote 5 predictions to {root / 'pred.parquet'}" in capsys.readouterr().out
    assert main(["predict", str(root / "adapted.pt"), "--device", "my_pi", "--archs", "7",
                 "--out", str(root / "one.parquet")]) == 0
    assert f"wrote 1 prediction to {root / 'one.parquet'}" in capsys.readouterr().out  # it said "1 predictions"
    for name in ("ONE.CSV", "ONE.PARQUET"):  # a name in capitals was refused: 'use a .parquet or .csv file name'
        assert main(["predict", str(root / "adapted.pt"), "--device", "my_pi", "--archs", "7",
                     "--out", str(root / name)]) == 0
    assert pd.read_csv(root / "ONE.CSV").equals(pd.read_parquet(root / "ONE.PARQUET"))
    assert list(pred.columns) == ["arch", "arch_str", "device", "predicted_ms"]
    assert pred["arch"].tolist() == [0, 1, 2, 3, 399] and (pred["predicted_ms"] > 0).all()
    # the prediction ranks the new device's unmeasured archs well
    assert main(["predict", str(root / "adapted.pt"), "--device", "my_pi", "--archs", "all",
                 "--out", str(root / "all.csv")]) == 0
    every = pd.read_csv(root / "all.csv").set_index("arch")
    truth = data.read_table(root / "new.parquet", "nb201").set_index("arch")["latency_ms"].iloc[12:]
    rho = every.loc[truth.index, "predicted_ms"].corr(truth, method="spearman")
    assert rho > 0.8


def test_a_model_written_to_redirected_stdout_is_whole(tables, tmp_path):
    """``hwl train --out /dev/stdout > ridge.pt``: the model goes to the shell's file and the command's
    'wrote' line to stderr, not into the model."""
    from harness.model_file import load_model

    target = tmp_path / "ridge.pt"
    with target.open("wb") as stdout:
        run = subprocess.run([sys.executable, "-m", "harness", "train", "--space", "nb201", "--method", "hwl_ridge",
                              "--table", str(tables / "train.parquet"), "--out", "/dev/stdout"],
                             stdout=stdout, stderr=subprocess.PIPE, timeout=300)
    assert run.returncode == 0, run.stderr.decode()
    assert "wrote /dev/stdout" in run.stderr.decode()
    assert load_model(target)["space"] == "nb201"


def test_model_files_are_checked(tables, capsys):
    root = tables
    assert main(["train", "--space", "nb201", "--method", "hwl_ridge", "--table", str(root / "train.parquet"),
                 "--out", str(root / "pretrained.pt")]) == 0
    assert main(["predict", str(root / "pretrained.pt"), "--device", "my_pi", "--archs", "0", "--out",
                 str(root / "x.csv")]) == 2
    assert "not adapted to a device yet" in capsys.readouterr().err
    assert main(["adapt", str(root / "pretrained.pt"), "--device", "nope", "--measurements", str(root / "new.parquet"),
                 "--out", str(root / "y.pt")]) == 2
    assert "unknown device 'nope'; valid devices: my_pi" in capsys.readouterr().err
    (root / "junk.pt").write_text("not a model")
    assert main(["adapt", str(root / "junk.pt"), "--device", "my_pi", "--measurements",
                 str(root / "new.parquet"), "--out", str(root / "z.pt")]) == 2
    assert "not an hwl model file" in capsys.readouterr().err


@pytest.mark.parametrize("method", registry.RANK_ONLY)
def test_train_refuses_a_rank_only_method_in_one_line(tables, capsys, method):
    """`hwl train --method flops` pretrained and wrote flops.pt, and only `hwl predict` (after adapt) said that a
    FLOP count is not this device's latency. train says so itself, before reading a table or writing a file."""
    out = tables / f"{method}_refused.pt"
    assert main(["train", "--space", "nb201", "--method", method, "--table", str(tables / "missing.parquet"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"method '{method}' ranks architectures but does not predict a device's latency in ms" in err
    assert f"hwl evaluate --method {method}" in err and "phys_bayes" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("method", ["copy", "flops"])
def test_predict_refuses_a_rank_only_model_in_one_line(tables, capsys, method):
    """A model file of `hwl train --method flops` from before train refused it: adapt, then predict wrote
    predicted_ms = 15647360 (a FLOP count) for arch 0; copy wrote another device's ms."""
    root = tables
    full = data.by_device(data.read_table(root / "train.parquet", "nb201"))
    model = registry.get_method(method).pretrain("nb201", TrainTables(full, full))
    save_model(root / f"{method}.pt", model, method=method, space="nb201", train_devices=list(full))
    assert main(["adapt", str(root / f"{method}.pt"), "--device", "my_pi", "--measurements",
                 str(root / "my_pi_12.csv"), "--out", str(root / f"{method}_a.pt")]) == 0
    capsys.readouterr()
    out = root / f"{method}_p.csv"
    assert main(["predict", str(root / f"{method}_a.pt"), "--device", "my_pi", "--archs", "0-9", "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert f"holds method '{method}', which ranks architectures but does not predict this device's latency" in err
    assert f"hwl evaluate --method {method}" in err and err.count("\n") == 1 and not out.exists()


def test_archs_of_the_other_space_name_the_models_space(tables, tmp_path, capsys):
    """An FBNet measurements file for an NB201 model said only that its arch_ops were 'not a nb201 architecture',
    and `hwl predict --archs` of FBNet keys the same: nothing said that the space is the model file's."""
    root = tables
    fbnet_file = tmp_path / "fb.csv"
    pd.DataFrame({"arch_ops": fbnet.sample(3, seed=0), "device": "my_pi", "latency_ms": [1.0, 2.0, 3.0]}).to_csv(
        fbnet_file, index=False)
    model, adapted = root / "ridge.pt", root / "ridge_a.pt"
    assert main(["train", "--space", "nb201", "--method", "hwl_ridge", "--table", str(root / "train.parquet"),
                 "--out", str(model)]) == 0
    assert main(["adapt", str(model), "--device", "my_pi", "--measurements", str(fbnet_file), "--out",
                 str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert f"{model} is an nb201 model, and {fbnet_file}, column arch_ops:" in err and "looks like a fbnet" in err
    assert main(["adapt", str(model), "--device", "my_pi", "--measurements", str(root / "my_pi_12.csv"), "--out",
                 str(adapted)]) == 0
    capsys.readouterr()
    assert main(["predict", str(adapted), "--device", "my_pi", "--archs", fbnet.sample(1, seed=0)[0],
                 "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{adapted} is an nb201 model, and 'k5_e6' is neither an NB201 index" in err and err.count("\n") == 1
    assert main(["predict", str(adapted), "--device", "my_pi", "--archs", "99999",
                 "--out", str(tmp_path / "p.csv")]) == 2
    assert "model" not in capsys.readouterr().err  # a bad arch of the model's own space: no word of the model
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "p.csv").exists()


def test_evaluate_on_a_small_table_says_how_few_archs_rho_is_scored_on(tables, tmp_path, caplog, capsys):
    """A 30-arch table (a small campaign's export) scored k=20 on 10 held-out archs with no word about it."""
    small = tmp_path / "my_pi_30.csv"
    pd.read_parquet(tables / "new.parquet").iloc[:30].to_csv(small, index=False)
    argv = ["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,silver_4114", "--method", "copy",
            "--trials", "1", "--samples", "5,20", "--n-pretrain", "50", "--json", str(tmp_path / "small.json")]
    assert main([*argv, "--test-table", str(small)]) == 0
    assert ("k=20 leaves only 10 architectures to score on test device 'my_pi' (its table has 30): rho over "
            "fewer than 50 is a noisy number; measure more of its architectures for a steadier one") in caplog.text
    assert [r["k"] for r in json.loads((tmp_path / "small.json").read_text())["results"]] == [5, 20]
    caplog.clear()
    assert main([*argv, "--test-table", str(tables / "new.parquet")]) == 0  # 400 archs: 380 left, no warning
    assert "leaves only" not in caplog.text


def test_evaluate_custom_task_writes_the_results_json(tables, tmp_path):
    out = tmp_path / "out.json"
    assert main(["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,silver_4114",
                 "--test-table", str(tables / "new.parquet"), "--samples", "5,10", "--trials", "2",
                 "--method", "hwl_ridge", "--json", str(out), "--plot", str(tmp_path / "rho.png"),
                 "--heatmap", str(tmp_path / "devices.png")]) == 0
    results = json.loads(out.read_text())["results"]
    assert [(r["task"], r["method"], r["k"], r["trials"]) for r in results] == [
        ("custom", "hwl_ridge", 5, 2), ("custom", "hwl_ridge", 10, 2)]
    assert list(results[0]["per_device"]) == ["my_pi"] and results[0]["seeds"] == [0, 1]
    assert results[1]["settings"]["train_devices"] == ["1080ti_1", "silver_4114"]
    assert (tmp_path / "rho.png").stat().st_size > 0 and (tmp_path / "devices.png").stat().st_size > 0


def test_evaluate_never_writes_its_outputs_over_the_test_table(tables, tmp_path, capsys):
    """--json or --plot naming the --test-table replaced the lab's measurements with the results."""
    test_table = tmp_path / "mine.csv"
    test_table.write_bytes((tables / "my_pi_12.csv").read_bytes())
    before = test_table.read_bytes()
    base = ["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,silver_4114", "--test-table", str(test_table),
            "--samples", "5", "--trials", "1", "--method", "hwl_ridge"]
    assert main([*base, "--json", str(test_table)]) == 2
    assert f"--json {test_table} is also --test-table; give it another file name" in capsys.readouterr().err
    assert main([*base, "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.json")]) == 2
    assert "is also --plot" in capsys.readouterr().err
    assert test_table.read_bytes() == before and not (tmp_path / "r.json").exists()


def test_evaluate_task_with_the_recommended_method(tmp_path, capsys):
    out = tmp_path / "n0.json"
    assert main(["evaluate", "--task", "N0", "--samples", "10", "--trials", "1", "--n-pretrain", "100",
                 "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    from predictors import registry

    assert result["method"] == registry.RECOMMENDED and len(result["per_device"]) == 6
    assert result["mean"] > 0.8


LATENCY_METHODS_ONLY = "unknown method 'nope'; valid methods: simple_reference, hwl_ridge, phys_bayes, tl_et, help\n"


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--task", "F9"], "unknown task 'F9'; valid tasks: N0"),
    (["evaluate", "--task", "N0", "--method", "nope"], "unknown method 'nope'; valid methods: simple_reference, copy,"),
    # commands that need latencies in ms list only the methods they take, not copy/flops/params they refuse
    (["train", "--space", "nb201", "--method", "nope", "--out", "{root}/m.pt"], LATENCY_METHODS_ONLY),
    (["onboard", "local-ort-1t", "--space", "nb201", "--method", "nope", "--store", "{root}/o.db",
      "--out", "{root}/p.pt"], LATENCY_METHODS_ONLY),
    # an empty --method ("$METHOD" unset) is a wrong name: it ran the recommended method as if the flag were not given
    (["train", "--space", "nb201", "--method", "", "--out", "{root}/m.pt"], "unknown method ''; valid methods: "),
    (["evaluate", "--task", "N0", "--method", ""], "unknown method ''; valid methods: "),
    (["onboard", "local-ort-1t", "--space", "nb201", "--method", "", "--candidates", "zz", "--store", "{root}/o.db",
      "--out", "{root}/p.pt"], "unknown method ''; valid methods: "),
    (["evaluate", "--task", "N0", "--samples", "16000", "--method", "copy", "--trials", "1"],
     "k=16000 leaves nothing to score"),
    (["evaluate", "--space", "nb201", "--train-devices", "nope", "--test-table", "{root}/new.parquet"],
     "unknown train device 'nope'"),
    (["evaluate", "--space", "fbnet", "--train-devices", "pixel2", "--test-table", "{root}/new.parquet"],
     "is not a fbnet architecture"),
    (["evaluate"], "give --task"),
    (["train", "--space", "nb201", "--devices", "pixel2,my_pi", "--out", "{root}/m.pt"],
     "unknown device 'my_pi'"),
    # an output that cannot be written is named before the work, not after it
    (["train", "--space", "nb201", "--out", "{root}/new.parquet/m.pt"], "cannot write {root}/new.parquet/m.pt"),
    (["train", "--space", "nb201", "--out", "{root}"], "{root} is a directory; give a file name"),
    (["onboard", "local-ort-1t", "--space", "nb201", "--store", "{root}/o.db", "--out", "{root}/new.parquet/p.pt"],
     "cannot write {root}/new.parquet/p.pt"),
    (["zcp", "nb201", "--archs", "1", "--out", "{root}/new.parquet/z.parquet"], "cannot write"),
])
def test_bad_input_is_one_line_and_exit_2(tables, capsys, argv, message):
    argv = [a.replace("{root}", str(tables)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.replace("{root}", str(tables)) in err and "Traceback" not in err
    assert not (tables / "o.db").exists()  # refused before the store was opened


@pytest.mark.slow
def test_installed_command_reports_an_empty_table(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("arch_index,device,latency_ms\n")
    hwl = Path(sys.executable).with_name("hwl")
    run = subprocess.run([str(hwl), "evaluate", "--space", "nb201", "--train-devices", "pixel2",
                          "--test-table", str(empty)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "has no rows" in run.stderr


def test_a_model_given_with_a_tilde_after_the_equals_sign_goes_home(tables, tmp_path, monkeypatch):
    """`hwl train --out=~/m.pt` (no shell expands that tilde) checked ~/m.pt, then wrote ./~/m.pt, a folder named '~'
    in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", "--space", "nb201", "--method", "hwl_ridge", "--table", str(tables / "train.parquet"),
                 "--out=~/m.pt"]) == 0
    assert (tmp_path / "home" / "m.pt").is_file() and not any((tmp_path / "work").iterdir())


def test_adapt_and_evaluate_read_a_harness_store(tables, tmp_path, capsys):
    from harness.importers import import_file
    from harness.store import Store

    store = Store(tmp_path / "lab.db")
    import_file(store, tables / "new.parquet", space="nb201")
    store.close()
    assert main(["train", "--space", "nb201", "--method", "hwl_ridge", "--table", str(tables / "train.parquet"),
                 "--out", str(tmp_path / "ridge.pt")]) == 0
    assert main(["adapt", str(tmp_path / "ridge.pt"), "--device", "my_pi", "--store", str(tmp_path / "lab.db"),
                 "--out", str(tmp_path / "adapted.pt")]) == 0
    assert "with 400 measurements" in capsys.readouterr().out
    out = tmp_path / "store.json"
    assert main(["evaluate", "--space", "nb201", "--train-devices", "pixel3", "--store", str(tmp_path / "lab.db"),
                 "--method", "copy", "--samples", "10", "--trials", "1", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert list(result["per_device"]) == ["my_pi"]
    # --json /dev/stdout redirected to a file: the JSON alone lands there, the table goes to stderr
    redirected = tmp_path / "redirected.json"
    with redirected.open("w") as stdout:
        run = subprocess.run([sys.executable, "-m", "harness", "evaluate", "--space", "nb201", "--train-devices",
                              "pixel3", "--store", str(tmp_path / "lab.db"), "--method", "copy", "--samples", "10",
                              "--trials", "1", "--json", "/dev/stdout"], stdout=stdout, stderr=subprocess.PIPE,
                             text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(redirected.read_text())["results"][0]["per_device"].keys() == {"my_pi"}
    assert "Spearman rho" in run.stderr and "wrote /dev/stdout" in run.stderr


@pytest.mark.parametrize("argv, message", [
    (["train", "--space", "nb201", "--devices", "1080ti_1,pixel3,1080ti_1", "--table", "{root}/train.parquet",
      "--method", "hwl_ridge", "--out", "{root}/twice.pt"], "device '1080ti_1' is named twice"),
    (["evaluate", "--space", "nb201", "--train-devices", "pixel2,pixel2", "--test-table", "{root}/new.parquet",
      "--method", "copy", "--trials", "1", "--samples", "5"], "train device 'pixel2' is named twice"),
    (["evaluate", "--space", "nb201", "--train-devices", "pixel2", "--test-devices", "my_pi,my_pi",
      "--test-table", "{root}/new.parquet", "--method", "copy", "--trials", "1", "--samples", "5"],
     "test device 'my_pi' is named twice"),
    (["evaluate", "--task", "N0", "--method", "copy", "--trials", "1", "--samples", "5,10,5"],
     "--samples names k=5 twice"),
    (["evaluate", "--task", "N0", "--trials", "1", "--samples", "5", "--set", "robust_iters=1", "--set",
      "robust_iters=2"], "--set gives robust_iters twice"),
])
def test_a_list_flag_naming_a_device_or_k_twice_is_refused(tables, capsys, argv, message):
    """`hwl train --devices a,b,a` trained on a and b and wrote the model saying so (the table keyed by device kept
    one a); `evaluate --samples 5,10,5` ran k=5's trials twice and printed two rows for it; of two --set values for
    one parameter the last was taken without a word."""
    argv = [a.replace("{root}", str(tables)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tables / "twice.pt").exists()


def test_adapting_on_a_single_latency_is_refused(tables, tmp_path, capsys):
    """One measurement, or 12 all equal (a stuck timer), made a predictor that predicted that one latency for
    every architecture (phys_bayes, hwl_ridge) and adapt said 'adapted to my_pi with 12 measurements'."""
    assert main(["train", "--space", "nb201", "--table", str(tables / "train.parquet"), "--method", "hwl_ridge",
                 "--out", str(tmp_path / "model.pt")]) == 0
    twelve = pd.read_csv(tables / "my_pi_12.csv")
    twelve.iloc[:1].to_csv(tmp_path / "one.csv", index=False)
    twelve.assign(latency_ms=7.0).to_csv(tmp_path / "equal.csv", index=False)
    capsys.readouterr()
    for name, message in (("one", "my_pi has one measurement: "), ("equal", "my_pi's 12 measurements are all 7 ms: ")):
        assert main(["adapt", str(tmp_path / "model.pt"), "--device", "my_pi", "--measurements",
                     str(tmp_path / f"{name}.csv"), "--out", str(tmp_path / f"{name}.pt")]) == 2
        err = capsys.readouterr().err
        assert message in err and "measure at least 2 architectures whose latencies differ" in err
        assert not (tmp_path / f"{name}.pt").exists()
    twelve.iloc[:2].to_csv(tmp_path / "two.csv", index=False)
    assert main(["adapt", str(tmp_path / "model.pt"), "--device", "my_pi", "--measurements",
                 str(tmp_path / "two.csv"), "--out", str(tmp_path / "two.pt")]) == 0


def test_train_on_a_table_the_method_cannot_use_is_one_line(tables, capsys):
    """HELP pretrains on its 10 reference archs; a train table without them (archs 0-399) ended `hwl train` in a
    ValueError traceback."""
    assert main(["train", "--space", "nb201", "--table", str(tables / "train.parquet"), "--method", "help",
                 "--out", str(tables / "help.pt")]) == 2
    err = capsys.readouterr().err
    assert "hwl train: error: method help cannot pretrain on this table: train device '1080ti_1' lacks latencies " \
           "of HELP's reference architectures" in err and err.count("\n") == 1
    assert not (tables / "help.pt").exists()


def _store_results(store, profile, archs, latencies, name):
    """``archs`` measured on ``profile``'s device, written to ``store`` as a campaign would (no Ray)."""
    from harness.campaign import CampaignSpec, plan_campaign

    cid, _, _ = plan_campaign(store, CampaignSpec(space="nb201", archs=tuple(map(str, archs)), devices=(str(profile),),
                                                  name=name))
    label = dict(zip(map(str, archs), latencies))
    for job, arch, _ in store.queued_jobs(cid, "my_pi"):
        attempt = store.start_attempt(job)
        store.finish_attempt(job, attempt, job_state="done", record={
            "outcome": "ok", "flags": [], "samples_ns": [[label[arch] * 1e6]] * 3,
            "stats": {"label_ms": label[arch], "median_ms": label[arch], "iqr_over_median": 0.01}})


def _my_pi_at_batch_1_and_8(tmp_path):
    """Two profiles of one device name, my_pi, that differ only in batch size."""
    from tests.campaign_helpers import write_profile

    one = write_profile(tmp_path, "my_pi")
    (tmp_path / "b8").mkdir()
    eight = write_profile(tmp_path / "b8", "my_pi")
    eight.write_text(eight.read_text().replace("[measurement]", "[workload]\nbatch_size = 8\n\n[measurement]"))
    return one, eight


def test_adapt_refuses_a_store_holding_the_device_under_two_batch_sizes(tables, tmp_path, capsys):
    """`hwl adapt --store` took the median of every latency the store held for the device name: batch 1 and
    batch 8 campaigns of my_pi made 300 'measurements', 100 of them halfway between the two (4.5 x the batch 1
    time) and 100 at 8 x, and adapt said 'adapted to my_pi with 300 measurements'."""
    from harness.store import Store

    truth = data.read_table(tables / "new.parquet", "nb201").set_index("arch")["latency_ms"]
    one, eight = _my_pi_at_batch_1_and_8(tmp_path)
    with Store(tmp_path / "lab.db") as store:
        _store_results(store, one, range(0, 200), truth.iloc[0:200].to_numpy(), "batch-1")
    assert main(["train", "--space", "nb201", "--method", "hwl_ridge", "--table", str(tables / "train.parquet"),
                 "--out", str(tmp_path / "ridge.pt")]) == 0
    assert main(["adapt", str(tmp_path / "ridge.pt"), "--device", "my_pi", "--store", str(tmp_path / "lab.db"),
                 "--out", str(tmp_path / "one.pt")]) == 0  # one setting: adapted as before
    assert "with 200 measurements" in capsys.readouterr().out
    with Store(tmp_path / "lab.db") as store:
        _store_results(store, eight, range(100, 300), 8 * truth.iloc[100:300].to_numpy(), "batch-8")
    assert main(["adapt", str(tmp_path / "ridge.pt"), "--device", "my_pi", "--store", str(tmp_path / "lab.db"),
                 "--out", str(tmp_path / "mixed.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (
        "holds my_pi's nb201 latencies measured with 2 different settings: 200 with batch_size = 1 (campaign batch-1); "
        "200 with batch_size = 8 (campaign batch-8); their median would mix them") in err
    assert not (tmp_path / "mixed.pt").exists()
    with Store(tmp_path / "lab.db") as store:  # nothing stored was lost
        assert len(store.latency_table("nb201")) == 400


def test_train_and_evaluate_refuse_a_store_holding_a_device_under_two_batch_sizes(tables, tmp_path, capsys):
    """`hwl train --store` and `hwl evaluate --store` read the same median over settings as adapt did: trained on,
    or scored against, a my_pi whose latencies were half batch 1, half batch 8 timings, without a word."""
    from harness.store import Store

    truth = data.read_table(tables / "new.parquet", "nb201").set_index("arch")["latency_ms"]
    one, eight = _my_pi_at_batch_1_and_8(tmp_path)
    with Store(tmp_path / "lab.db") as store:
        _store_results(store, one, range(0, 200), truth.iloc[0:200].to_numpy(), "batch-1")
        _store_results(store, eight, range(200, 400), 8 * truth.iloc[200:400].to_numpy(), "batch-8")
    message = "holds my_pi's nb201 latencies measured with 2 different settings: 200 with batch_size = 1"
    capsys.readouterr()
    assert main(["train", "--space", "nb201", "--method", "hwl_ridge", "--devices", "my_pi", "--store",
                 str(tmp_path / "lab.db"), "--out", str(tmp_path / "model.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "model.pt").exists()
    assert main(["evaluate", "--space", "nb201", "--train-devices", "pixel3", "--store", str(tmp_path / "lab.db"),
                 "--method", "copy", "--samples", "10", "--trials", "1", "--json", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "e.json").exists()


def test_a_one_device_table_with_a_misnamed_latency_column_says_to_name_it_latency_ms(tables, tmp_path, capsys):
    """Since wide tables (hwl campaign export --format help) are read, a one-device file whose latency column is
    called 'latency' read as a wide table of a device named 'latency': adapt said "unknown device 'my_pi';
    valid devices: latency". It now says the file has no latency_ms column and how it was read."""
    truth = data.read_table(tables / "new.parquet", "nb201")
    mine = pd.DataFrame({"arch_index": truth["arch"].iloc[:12], "latency": truth["latency_ms"].iloc[:12]})
    mine.to_csv(tmp_path / "my_pi.csv", index=False)
    assert main(["train", "--space", "nb201", "--method", "hwl_ridge", "--table", str(tables / "train.parquet"),
                 "--out", str(tmp_path / "ridge.pt")]) == 0
    capsys.readouterr()
    assert main(["adapt", str(tmp_path / "ridge.pt"), "--device", "my_pi", "--measurements",
                 str(tmp_path / "my_pi.csv"), "--out", str(tmp_path / "a.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("has no device or latency_ms column, so it reads as one latency column per "
                                     "device (latency), and none is my_pi: name a one-device table's latency "
                                     "column latency_ms") in err, err
    assert not (tmp_path / "a.pt").exists()
    mine.rename(columns={"latency": "latency_ms"}).to_csv(tmp_path / "my_pi.csv", index=False)
    assert main(["adapt", str(tmp_path / "ridge.pt"), "--device", "my_pi", "--measurements",
                 str(tmp_path / "my_pi.csv"), "--out", str(tmp_path / "a.pt")]) == 0


def test_a_setting_over_two_campaigns_is_named_whole_in_the_store_refusal(tables, tmp_path, capsys):
    """adapt --store, refusing my_pi at batch 1 (campaigns batch-1, batch-1b) and batch 8, said to export one
    campaign, batch-1: a file without batch-1b's latencies. The line now names the export of both, and it adapts."""
    from harness.store import Store

    truth = data.read_table(tables / "new.parquet", "nb201").set_index("arch")["latency_ms"]
    one, eight = _my_pi_at_batch_1_and_8(tmp_path)
    with Store(tmp_path / "lab.db") as store:
        _store_results(store, one, range(0, 100), truth.iloc[0:100].to_numpy(), "batch-1")
        _store_results(store, one, range(100, 150), truth.iloc[100:150].to_numpy(), "batch-1b")
        _store_results(store, eight, range(0, 100), 8 * truth.iloc[0:100].to_numpy(), "batch-8")
    assert main(["train", "--space", "nb201", "--method", "hwl_ridge", "--table", str(tables / "train.parquet"),
                 "--out", str(tmp_path / "ridge.pt")]) == 0
    adapt = ["adapt", str(tmp_path / "ridge.pt"), "--device", "my_pi", "--out", str(tmp_path / "a.pt")]
    capsys.readouterr()
    assert main(adapt + ["--store", str(tmp_path / "lab.db")]) == 2
    err = capsys.readouterr().err
    command = f"hwl campaign export --store {tmp_path / 'lab.db'} --name batch-1 --name batch-1b --device my_pi"
    assert err.count("\n") == 1 and f"so export one setting's campaigns ({command} --out FILE.parquet)" in err, err
    assert main(command.split()[1:] + ["--out", str(tmp_path / "b1.parquet")]) == 0
    assert main(adapt + ["--measurements", str(tmp_path / "b1.parquet")]) == 0
    assert "adapted to my_pi with 150 measurements" in capsys.readouterr().out


def test_adapting_to_one_of_the_models_train_devices_is_said(tables, tmp_path, capsys, caplog):
    # `hwl train --store lab.db` pretrains on every device of the store, the new one too; `hwl adapt` to it said
    # only "adapted to my_pi with 12 measurements", a predictor that had seen the device's own latencies
    mine = pd.read_parquet(tables / "new.parquet")
    mine = mine.assign(arch_index=[nb201.to_index(a) for a in mine.pop("arch_str")])
    train = pd.concat([pd.read_parquet(tables / "train.parquet"), mine])
    train.to_parquet(tmp_path / "with_my_pi.parquet")
    assert main(["train", "--space", "nb201", "--table", str(tmp_path / "with_my_pi.parquet"), "--method",
                 "hwl_ridge", "--out", str(tmp_path / "model.pt")]) == 0
    caplog.clear()
    assert main(["adapt", str(tmp_path / "model.pt"), "--device", "my_pi", "--measurements",
                 str(tables / "my_pi_12.csv"), "--out", str(tmp_path / "adapted.pt")]) == 0
    assert f"my_pi is one of {tmp_path / 'model.pt'}'s train devices" in caplog.text
    caplog.clear()
    assert main(["train", "--space", "nb201", "--table", str(tables / "train.parquet"), "--method", "hwl_ridge",
                 "--out", str(tmp_path / "new.pt")]) == 0
    assert main(["adapt", str(tmp_path / "new.pt"), "--device", "my_pi", "--measurements",
                 str(tables / "my_pi_12.csv"), "--out", str(tmp_path / "adapted_new.pt")]) == 0
    assert "train devices" not in caplog.text


def test_evaluate_prints_every_devices_rho_whole_on_an_80_column_terminal():
    # the per-device rhos were a column of the summary table, cut by rich to "titan_rtx_1=0.8…" at width 80
    import io

    from rich.console import Console

    from harness.cli.evaluate import print_results
    devices = {"titan_rtx_256": 0.981, "gold_6226": 0.967, "1080ti_32": 0.912, "essential_ph_1": 0.713}
    results = [dict(task="F3", method="phys_bayes", k=k, trials=5, mean=0.9, std=0.01, seconds=20.0,
                    per_device={d: v - k / 1000 for d, v in devices.items()}) for k in (5, 10, 20)]
    out = io.StringIO()
    print_results(results, Console(file=out, width=80))
    text = out.getvalue()
    assert "…" not in text
    rows = {line.split()[1]: line.split()[3::2] for line in text.splitlines() if line.startswith("│ ")
            and line.split()[1] in devices}
    assert rows["titan_rtx_256"] == ["0.976", "0.971", "0.961"]
    assert rows["essential_ph_1"] == ["0.708", "0.703", "0.693"] and len(rows) == 4


def test_the_order_of_test_devices_changes_no_devices_score(tables, tmp_path):
    """`hwl evaluate --test-devices local-ort-1t,gold_6226` scored gold_6226 0.984 at k=5 and `--test-devices
    gold_6226,local-ort-1t` 0.980 on the same store: a trial's picks are drawn per device number, and the numbers
    followed the flag's order (a table's devices were sorted already). They are sorted by name either way."""
    both = pd.concat([pd.read_parquet(tables / "new.parquet"),
                      pd.read_parquet(tables / "new.parquet").assign(device="my_nano")], ignore_index=True)
    both.loc[both["device"] == "my_nano", "latency_ms"] *= np.linspace(0.8, 1.2, 400)
    both.to_parquet(tmp_path / "two.parquet")
    scores = {}
    for order in ("my_pi,my_nano", "my_nano,my_pi"):
        out = tmp_path / f"{order}.json"
        assert main(["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,pixel3", "--method", "hwl_ridge",
                     "--test-table", str(tmp_path / "two.parquet"), "--test-devices", order, "--samples", "5",
                     "--trials", "1", "--n-pretrain", "50", "--json", str(out)]) == 0
        scores[order] = json.loads(out.read_text())["results"][0]["per_device"]
    assert scores["my_pi,my_nano"] == scores["my_nano,my_pi"]
    assert list(scores["my_pi,my_nano"]) == ["my_nano", "my_pi"]


def test_a_wide_tables_non_latency_columns_are_refused_by_every_predictor_command(tables, tmp_path, capsys):
    """A lab's wide table with a flops column beside its device: `hwl evaluate --test-table` scored 'flops' as a
    test device and averaged it into the mean rho; `adapt` and `train` read it as a device too. Each command now
    refuses the file in one line naming the column, and writes nothing."""
    truth = data.read_table(tables / "new.parquet", "nb201").iloc[:60]
    flops = (1e7 * truth["latency_ms"]).round() + 1  # ranks with the latency, as FLOPs do
    pd.DataFrame({"arch_index": truth["arch"], "my_pi": truth["latency_ms"], "flops": flops}).to_csv(
        tmp_path / "my_pi_wide.csv", index=False)
    train = pd.read_parquet(tables / "train.parquet").pivot(index="arch_index", columns="device", values="latency_ms")
    train.assign(params=np.arange(1, len(train) + 1) * 1000).reset_index().to_csv(tmp_path / "train_wide.csv",
                                                                                  index=False)
    assert main(["train", "--space", "nb201", "--method", "hwl_ridge", "--table", str(tables / "train.parquet"),
                 "--out", str(tmp_path / "ridge.pt")]) == 0
    runs = {"evaluate": ["evaluate", "--space", "nb201", "--train-devices", "1080ti_1,silver_4114", "--method", "copy",
                         "--trials", "1", "--samples", "5", "--test-table", str(tmp_path / "my_pi_wide.csv"),
                         "--json", str(tmp_path / "out.json")],
            "adapt": ["adapt", str(tmp_path / "ridge.pt"), "--device", "my_pi", "--measurements",
                      str(tmp_path / "my_pi_wide.csv"), "--out", str(tmp_path / "out.pt")],
            "train": ["train", "--space", "nb201", "--method", "hwl_ridge", "--table", str(tmp_path / "train_wide.csv"),
                      "--out", str(tmp_path / "out.pt")]}
    for command, argv in runs.items():
        capsys.readouterr()
        assert main(argv) == 2, command
        err = capsys.readouterr().err
        column = "'params' (a count or size); drop it" if command == "train" else "'flops' (a count or size); drop it"
        assert err.count("\n") == 1 and "1 column of a wide table would be read as devices' latencies" in err, err
        assert column in err, err
        assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.pt").exists()


def test_evaluate_says_what_its_std_and_seconds_are_and_shows_no_std_of_one_trial():
    """`hwl evaluate --trials 1` printed std 0.000, as if the spread had been measured to be nil, and neither std nor
    seconds said what it was over."""
    import io

    from rich.console import Console

    from harness.cli.evaluate import print_results
    results = [dict(task="N0", method="phys_bayes", k=5, trials=trials, mean=0.9, std=0.0 if trials == 1 else 0.01,
                    seconds=4.4, per_device={"raspi4": 0.93}) for trials in (1, 3)]
    out = io.StringIO()
    print_results(results, Console(file=out, width=120))
    text = out.getvalue()
    rows = [line.split("│")[1:-1] for line in text.splitlines() if line.startswith("│ N0")]
    assert [row[5].strip() for row in rows] == ["-", "0.010"]
    assert "std: of the device mean over the trials, - for one trial;" in text
    assert "seconds: pretraining, picks, adaptation and prediction, summed over the trials" in text
