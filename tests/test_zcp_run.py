"""Proxies as Ray tasks into a real store: resume, Parquet output, ZCP encoding, CLI errors, SIGTERM."""
import json
import shutil
import signal
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.errors import StoreError
from predictors.encodings import ZCPEncoder, read_proxy_table, zcp_vec
from predictors.zcp import BatchSpec, ProxyStore, ZCPError, proxy_frame, run_proxies, run_table, write_parquet
from predictors.zcp.table import read_parquet_meta
from tests.campaign_helpers import hwl, kill_leftovers, signal_when
from tests.torch_threads import one_torch_thread  # noqa: F401  (autouse)

ray = pytest.importorskip("ray")
PROXIES = ["params", "synflow", "snip", "nwot"]
BATCH = BatchSpec(batch_size=4)
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_resumable_run_into_a_store_then_table_and_encoding(tmp_path, local_ray):
    db = tmp_path / "lab.db"
    with ProxyStore(db) as store:
        first = run_proxies("nb201", [1, 2], dataset="ImageNet16-120", proxies=PROXIES, batch=BATCH, store=store)
    assert len(first.results) == 2 and first.skipped == 0 and not first.failed
    assert all(r["peak_rss_mb"] > 0 for r in first.results)

    with ProxyStore(db) as store:  # a second run (a restarted process) skips what is stored
        second = run_proxies("nb201", [1, 2, 3], dataset="ImageNet16-120", proxies=PROXIES, batch=BATCH,
                             store=store)
        assert second.skipped == 2 and [r["arch"] for r in second.results] == [3]
        wide = run_table("nb201", [1, 2, 3], second, store, "ImageNet16-120", BATCH.key, PROXIES)
    assert list(wide.columns) == ["arch_index", "arch_str", *PROXIES] and wide["arch_index"].tolist() == [1, 2, 3]
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM zcp_scores").fetchone()[0]
    assert rows == 3 * len(PROXIES)

    # the same scores as computing in process (one model at a time, same seed)
    from predictors.zcp import load_batch, score_arch
    x, y = load_batch("nb201", "ImageNet16-120", BATCH)
    local = score_arch("nb201", 3, x, y, dataset="ImageNet16-120", proxies=PROXIES)
    assert wide.iloc[2]["params"] == local["scores"]["params"]
    assert wide.iloc[2]["synflow"] == pytest.approx(local["scores"]["synflow"], rel=1e-9)

    out = write_parquet(wide, tmp_path / "zcp.parquet", space="nb201", dataset="ImageNet16-120", input_key=BATCH.key)
    assert read_parquet_meta(out)["hwl_format"] == "hwl-zcp/1"
    from_file = proxy_frame("nb201", path=out)
    from_store = proxy_frame("nb201", store=db)
    pd.testing.assert_frame_equal(from_file[PROXIES], from_store[PROXIES], check_names=False)
    assert read_proxy_table(out, "nb201").index.tolist() == [1, 2, 3]

    # our proxies feed the ZCP and ZCPVec encodings of the predictors
    enc = ZCPEncoder(from_store).fit([1, 2, 3])
    assert enc.transform([1, 2, 3]).shape == (3, len(PROXIES))
    assert zcp_vec("nb201", from_store).fit([1, 2, 3]).transform([2]).shape == (1, len(PROXIES) + 30)
    # ... and a latency predictor takes the encoded proxies like any other encoding
    from predictors import data
    from predictors.mlp import MLPPredictor

    latency = data.by_device(data.help_table("nb201"), ["raspi4"])["raspi4"].loc[[1, 2, 3]]
    mlp = MLPPredictor(hidden=8, n_layers=2, epochs=3, random_state=0).fit(enc.transform([1, 2, 3]), latency)
    assert mlp.predict(enc.transform([1, 2, 3])).shape == (3,)


@pytest.mark.slow
def test_cli_writes_store_and_parquet_and_resumes(tmp_path, local_ray, capsys):
    db, out = tmp_path / "lab.db", tmp_path / "z.parquet"
    args = ["zcp", "nb201", "--archs", "5,6", "--dataset", "ImageNet16-120", "--batch-size", "4",
            "--proxies", "params,flops,jacov", "--store", str(db), "--out", str(out)]
    assert main(args) == 0
    assert "2 scored, 0 already in the store" in capsys.readouterr().out
    assert main(args) == 0
    # the rerun added "in 0.0 s on 0 CPU(s); peak worker RSS nan MiB": no worker ran
    assert "0 scored, 2 already in the store, 0 failed\n" in capsys.readouterr().out
    table = pd.read_parquet(out)
    assert table["arch_index"].tolist() == [5, 6] and np.isfinite(table["jacov"]).all()
    one = ["zcp", "nb201", "--archs", "5", "--batch-size", "4", "--proxies", "params", "--workers", "1",
           "--store", str(tmp_path / "one.db"), "--out", str(tmp_path / "ONE.PARQUET")]  # in capitals: refused before
    assert main(one) == 0
    out = capsys.readouterr().out  # it said "on 1 CPU(s)" and "wrote 1 rows x 1 proxies"
    assert "CPU(s)" not in out and f"wrote 1 row x 1 proxy to {tmp_path / 'ONE.PARQUET'}" in out, out


@pytest.mark.slow
def test_another_init_seed_scores_other_weights_not_the_stored_ones(tmp_path, local_ray, capsys):
    """The store keyed scores by the input batch alone: `--init-seed 7` into a store holding seed 0's scores said
    "0 scored, 1 already in the store" and wrote seed 0's l2_norm as its own."""
    db = tmp_path / "lab.db"
    args = ["zcp", "nb201", "--archs", "5", "--batch-size", "4", "--proxies", "l2_norm", "--workers", "1",
            "--store", str(db)]
    assert main([*args, "--out", str(tmp_path / "seed0.parquet")]) == 0
    assert "1 scored, 0 already in the store" in capsys.readouterr().out
    assert main([*args, "--init-seed", "7", "--out", str(tmp_path / "seed7.parquet")]) == 0
    assert "1 scored, 0 already in the store" in capsys.readouterr().out
    seed0, seed7 = (pd.read_parquet(tmp_path / f"seed{s}.parquet")["l2_norm"].item() for s in (0, 7))
    assert seed0 != seed7
    assert main([*args, "--init-seed", "7", "--out", str(tmp_path / "again.parquet")]) == 0  # and seed 7 resumes
    assert "0 scored, 1 already in the store" in capsys.readouterr().out
    assert pd.read_parquet(tmp_path / "again.parquet")["l2_norm"].item() == seed7
    with ProxyStore(db) as store:  # seed 0 keeps the key stores held before
        assert store.done_archs("nb201", "cifar10", BatchSpec(batch_size=4).key, ["l2_norm"]) == {"5"}


def test_cli_bad_input(tmp_path, capsys):
    assert main(["zcp", "nb201", "--archs", "1", "--proxies", "snip,bogus", "--out", str(tmp_path / "a.parquet")]) == 2
    assert "valid proxies" in capsys.readouterr().err
    assert main(["zcp", "nb201", "--archs", "1"]) == 2
    assert "--store FILE and/or --out" in capsys.readouterr().err
    assert main(["zcp", "nb201", "--archs", "1", "--out", str(tmp_path / "a.csv")]) == 2
    assert "Parquet" in capsys.readouterr().err
    assert main(["zcp", "nb201", "--archs", "99999", "--out", str(tmp_path / "a.parquet")]) == 2
    assert "out of range" in capsys.readouterr().err


def test_out_naming_the_store_is_refused_before_the_store_is_touched(tmp_path, capsys):
    """`--store z.parquet --out z.parquet` wrote the table over the store it had just scored into: every stored
    score was gone, and the next run read a Parquet file as the store."""
    db = tmp_path / "z.parquet"
    with ProxyStore(db) as store:
        store.add("nb201", "cifar10", BatchSpec(batch_size=4).key, 5, {"params": 1.0}, {"params": 0.1})
    before = db.read_bytes()
    assert main(["zcp", "nb201", "--archs", "5", "--batch-size", "4", "--proxies", "params", "--store", str(db),
                 "--out", str(db)]) == 2
    assert f"--out {db} is also --store; give it another file name" in capsys.readouterr().err
    assert db.read_bytes() == before


@pytest.mark.slow
def test_sigterm_stops_a_run_like_ctrl_c_keeping_the_scores_and_ray_address_does_not_stop_the_local_run(tmp_path):
    """hwl zcp starts its own local Ray; with RAY_ADDRESS set (a lab's shell) Ray refused that start with a
    traceback ('When connecting to an existing cluster, num_cpus and num_gpus must not be provided'): here the run
    is set going with RAY_ADDRESS set, scores architectures into its store, and SIGTERM stops it like Ctrl-C."""
    db = tmp_path / "lab.db"
    args = ["zcp", "nb201", "--archs", "random:200", "--batch-size", "4", "--proxies", "params,jacov",
            "--store", str(db), "--out", str(tmp_path / "z.parquet")]

    def scored():
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                return con.execute("SELECT count(DISTINCT arch) FROM zcp_scores").fetchone()[0] >= 3
        except sqlite3.OperationalError:  # no store or table yet
            return False

    ray_tmp = tempfile.mkdtemp(prefix="hwlz-", dir="/tmp")  # Ray's socket paths must stay short
    try:
        # (an hwl ending before its third score, as with the refused start, fails signal_when)
        stderr, rc, _ = signal_when(args, ray_tmp, scored, signal.SIGTERM, env={"RAY_ADDRESS": "127.0.0.1:1"})
    finally:
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert rc == 143 and "hwl zcp: terminated; every score computed so far is in the store" in stderr, stderr
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr
    with ProxyStore(db) as store:
        n = len(store.done_archs("nb201", "cifar10", BATCH.key, ["params", "jacov"]))
        assert 3 <= n < 200
    assert f"(of 200 architectures {n} scored, {200 - n} left)" in stderr, stderr


def test_an_interrupted_run_says_how_many_architectures_are_scored_and_left(tmp_path):
    """Its stop line said the scores were kept, not how many of the command's architectures had one."""
    from harness.cli import build_parser

    db = tmp_path / "lab.db"
    with ProxyStore(db) as store:
        for arch in (2, 4, 99):  # 99 is not one of this command's
            store.add("nb201", "cifar10", BATCH.key, arch, {"params": 1.0, "jacov": 2.0}, {})
        store.add("nb201", "cifar10", BATCH.key, 5, {"params": 1.0}, {})  # not every proxy yet
    argv = ["zcp", "nb201", "--archs", "1-5", "--batch-size", "4", "--proxies", "params,jacov", "--store", str(db)]
    args = build_parser(argv).parse_args(argv)
    assert args.resume_hint(args) == ("every score computed so far is in the store (of 5 architectures 2 scored, "
                                      "3 left); run the same command again to go on")
    argv[-1] = str(tmp_path / "none_yet.db")  # stopped before its store was made
    args = build_parser(argv).parse_args(argv)
    assert args.resume_hint(args) == "every score computed so far is in the store; run the same command again to go on"


def test_a_ray_temp_folder_too_deep_for_unix_sockets_is_a_clear_error(tmp_path):
    deep = tmp_path / ("d" * 90)
    done = hwl("zcp", "nb201", "--archs", "1", "--proxies", "params", "--out", tmp_path / "z.parquet",
               env={"RAY_TMPDIR": str(deep)}, timeout=120)
    assert done.returncode == 2 and "set RAY_TMPDIR to a short folder" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "z.parquet").exists()


def test_an_arch_the_store_never_scored_for_a_proxy_is_left_out_not_given_its_worst_score(tmp_path, caplog):
    """Runs of `hwl zcp` with other --proxies into one store: arch 3 (params alone) got the store's lowest snip, as
    if computed, and fed the search's accuracy predictor so. A stored non-finite score still gets the worst."""
    db, key = tmp_path / "lab.db", BatchSpec().key
    with ProxyStore(db) as store:
        for arch in (0, 1, 2):
            store.add("nb201", "cifar10", key, arch, {"params": 10.0 + arch, "snip": 5.0 + arch}, {})
        store.add("nb201", "cifar10", key, 3, {"params": 13.0}, {})
        store.add("nb201", "cifar10", key, 4, {"params": 14.0, "snip": float("nan")}, {})
    with caplog.at_level("WARNING"):
        frame = proxy_frame("nb201", store=db)
    assert frame.index.tolist() == [0, 1, 2, 4] and frame.loc[4, "snip"] == 5.0
    assert "1 of 5 architectures lack a score of some proxy (arch 3: no snip) and are left out" in caplog.text
    caplog.clear()
    assert proxy_frame("nb201", store=db, proxies=["params"]).index.tolist() == [0, 1, 2, 3, 4]
    assert "left out" not in caplog.text


def test_the_out_table_holds_the_archs_scored_for_every_asked_proxy(tmp_path):
    """An asked arch that failed in this run but had params from an earlier `--proxies params` run was written with
    an empty snip cell, which --zcp-table then filled with the worst snip."""
    from predictors.zcp import RunReport

    key = BatchSpec().key
    with ProxyStore(tmp_path / "lab.db") as store:
        store.add("nb201", "cifar10", key, 5, {"params": 1.0}, {})
        store.add("nb201", "cifar10", key, 6, {"params": 2.0, "snip": 3.0}, {})
        wide = run_table("nb201", [5, 6], RunReport(), store, "cifar10", key, ["params", "snip"])
    assert wide["arch_index"].tolist() == [6] and wide["snip"].tolist() == [3.0]


def test_store_refuses_a_foreign_sqlite_file_and_empty_reads(tmp_path):
    foreign = tmp_path / "other.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not an hwl store"):
        ProxyStore(foreign)
    ProxyStore(tmp_path / "empty.db").close()
    with pytest.raises(ZCPError, match="run `hwl zcp` first"):
        proxy_frame("nb201", store=tmp_path / "empty.db")
    with pytest.raises(ZCPError, match="exactly one proxy source"):
        proxy_frame("nb201")


def test_an_empty_proxies_list_is_refused_not_taken_as_all(tmp_path, capsys):
    """--proxies "$P" with P unset computed all 12 proxies."""
    assert main(["zcp", "nb201", "--archs", "1", "--proxies", "", "--out", str(tmp_path / "a.parquet")]) == 2
    assert "none given" in capsys.readouterr().err and not (tmp_path / "a.parquet").exists()


@pytest.mark.skipif(not (SHARED / "nb201_accuracy.csv").is_file(), reason="needs ../shared/data")
def test_search_picks_one_run_of_a_store_that_holds_several(tmp_path, capsys):
    """A proxy store of two runs (batch sizes 2 and 3) was refused by hwl search ('choose one with
    dataset/input_key'), which had no flag to choose one; --zcp-run names it as the error lists it."""
    from spaces.cost import flops_params

    db = tmp_path / "zcp.db"
    archs = list(range(0, 15625, 250))  # 63 cells
    # the store as two `hwl zcp` runs leave it; the analytic counts, not 126 Ray tasks, since the search reads
    # the stored rows alone (run_proxies into a store: test_resumable_run_into_a_store_then_table_and_encoding)
    flops, params = flops_params("nb201", archs, "cifar10")
    with ProxyStore(db) as store:
        for batch in (BatchSpec(batch_size=2), BatchSpec(batch_size=3)):
            for arch, f, p in zip(archs, flops, params):
                store.add("nb201", "cifar10", batch.key, arch, {"params": p, "flops": f}, {})
    args = ["search", "--device", "raspi4", "--max-latency-ms", "25", "--budget", "20", "--latency-samples", "5",
            "--accuracy-table", str(SHARED / "nb201_accuracy.csv"), "--seeds", "1",
            "--train-devices", "gold_6240,silver_4114,pixel3,1080ti_1", "--encoding", "zcp", "--zcp-store", str(db)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "several nb201 proxy runs" in err and "--zcp-run" in err
    run = f"cifar10|{BatchSpec(batch_size=3).key}"
    assert repr(run) in err
    assert main([*args, "--zcp-run", "cifar10|nope"]) == 2
    assert "no nb201 proxy scores of run 'cifar10|nope'; it holds" in capsys.readouterr().err
    assert main([*args, "--zcp-run", run, "--json", str(tmp_path / "s.json")]) == 0
    assert len(json.loads((tmp_path / "s.json").read_text())["runs"]["predictor"]) == 1


@pytest.mark.skipif(not (SHARED / "nb201_accuracy.csv").is_file(), reason="needs ../shared/data")
def test_search_on_a_store_without_proxy_scores_says_so(tmp_path, capsys):
    """--zcp-store naming a store `hwl zcp` never wrote to (a campaign's, an import's) ended in pandas'
    DatabaseError traceback ('no such table: zcp_scores'); the store is left as it was."""
    db, table = tmp_path / "lab.db", tmp_path / "t.csv"
    table.write_text("arch_index,device,latency_ms\n1,pi,2.0\n2,pi,3.0\n")
    assert main(["data", "import", str(table), "--store", str(db)]) == 0
    before = db.read_bytes()
    assert main(["search", "--device", "raspi4", "--max-latency-ms", "25", "--budget", "20", "--latency-samples", "5",
                 "--accuracy-table", str(SHARED / "nb201_accuracy.csv"), "--seeds", "1", "--encoding", "zcp",
                 "--zcp-store", str(db)]) == 2
    assert f"store {db} holds no nb201 proxy scores: run `hwl zcp` first" in capsys.readouterr().err
    assert db.read_bytes() == before


def test_a_proxy_batch_too_large_for_memory_is_one_line(tmp_path, capsys):
    """The synthetic batch of `--batch-size 99999999` ended in torch's allocator traceback before Ray started."""
    assert main(["zcp", "nb201", "--archs", "0-1", "--proxies", "snip", "--batch-size", "99999999",
                 "--out", str(tmp_path / "z.parquet")]) == 2
    err = capsys.readouterr().err
    assert "not enough memory for a batch of 99999999 cifar10 images" in err and "--batch-size" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "z.parquet").exists()
