"""The benchmarks' number flags: a bad count is one usage line naming the flag, before any work."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench_scripts import SCRIPTS, refused, run_main

ROOT = Path(__file__).resolve().parents[1]

BAD = {  # script -> (flags, the flag refused, what it says)
    "bench_accuracy": (["--samples", "10,0"], "--samples", "expected a whole number >= 1, got 0 in '10,0'"),
    "bench_adapt": (["--sizes", "100,x"], "--sizes", "expected a whole number >= 1, got 'x' in '100,x'"),
    "bench_agent_overhead": (["--pairs", "0"], "--pairs", "expected a whole number >= 1, got 0"),
    "bench_agent_repro": (["--n", "0"], "--n", "expected a whole number >= 1, got 0"),
    "bench_campaign_overhead": (["--archs", "-5"], "--archs", "expected a whole number >= 1, got -5"),
    "bench_cli_start": (["--repeats", "0"], "--repeats", "expected a whole number >= 1, got 0"),
    "bench_core_load": (["--rounds", "0"], "--rounds", "expected a whole number >= 1, got 0"),
    "bench_crash": (["--window-s", "0"], "--window-s", "expected a number > 0, got 0"),
    "bench_cross_space": (["--trials", "0"], "--trials", "expected a whole number >= 1, got 0"),
    "bench_dispatch": (["--jobs", "0"], "--jobs", "expected a whole number >= 1, got 0"),
    "bench_export": (["--nb201", "-1"], "--nb201", "expected a whole number >= 0, got -1"),
    "bench_gpu": (["--n", "0"], "--n", "expected a whole number >= 1, got 0"),
    "bench_leftovers": (["--repeats", "0"], "--repeats", "expected a whole number >= 1, got 0"),
    "bench_onboard": (["--checkpoints", "5,ten"], "--checkpoints",
                      "expected a whole number >= 1, got 'ten' in '5,ten'"),
    "bench_onboard_scale": (["--max-gib", "-1"], "--max-gib", "expected a number > 0, got -1"),
    "bench_onboard_uncertainty": (["--budget", "0"], "--budget", "expected a whole number >= 1, got 0"),
    "bench_predictors": (["--trials", "0"], "--trials", "expected a whole number >= 1, got 0"),
    "bench_scale": (["--devices", "0"], "--devices", "expected a whole number >= 1, got 0"),
    "bench_search": (["--seeds", "0"], "--seeds", "expected a whole number >= 1, got 0"),
    "bench_soak": (["--every", "0"], "--every", "expected a whole number >= 1, got 0"),
    "bench_stall": (["--jobs", "0"], "--jobs", "expected a whole number >= 1, got 0"),
    "bench_ssh": (["--jobs", "0"], "--jobs", "expected a whole number >= 1, got 0"),
    "bench_tvm": (["--threads-list", "1,0"], "--threads-list", "expected a whole number >= 1, got 0 in '1,0'"),
    "bench_verified_load": (["--runs", "0"], "--runs", "expected a whole number >= 1, got 0"),
    "bench_zcp": (["--batch-size", "0"], "--batch-size", "expected a whole number >= 1, got 0"),
}


def test_every_benchmark_has_a_bad_count_case():
    assert sorted(BAD) == [s.name for s in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_bad_count_is_one_usage_line_before_any_work(script, monkeypatch, capsys):
    """Zero, negative or non-numeric counts ended in a traceback, most after the setup or the whole run:
    bench_leftovers --repeats 0 and bench_ssh --jobs 0 in 'no median for empty data' (bench_ssh after starting
    sshd and deploying), bench_dispatch --jobs 0 in ArchError, bench_export --nb201 -1 likewise."""
    flags, flag, says = BAD[script.name]
    assert refused(script.name, flags, monkeypatch, capsys) == f"{script.name}: error: argument {flag}: {says}"


@pytest.mark.parametrize("flags, says", [
    (["bench_campaign_overhead", "--devices", "local-ort-1", "--archs", "1"],
     "unknown device 'local-ort-1': no profile"),
    (["bench_adapt", "--device", "raspi", "--sizes", "100"], "unknown device 'raspi'; valid devices: 1080ti_1,"),
    (["bench_search", "--device", "raspi", "--settings", "full"], "unknown device 'raspi'; valid devices: 1080ti_1,"),
], ids=["bench_campaign_overhead", "bench_adapt", "bench_search"])
def test_an_unknown_name_is_one_line(flags, says, tmp_path):
    """A misspelt device profile or table device ended in a ProfileError / LatencyTableError traceback;
    bench_adapt's ended in each size's child process, the run exiting 0 with 'exit code 1' rows."""
    script, *rest = flags
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *rest, "--json", str(tmp_path / "o.json")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1
    assert run.stderr.startswith(f"{script}: error: {says}")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("script, flag", [("bench_core_load", "--core"), ("bench_agent_repro", "--cores"),
                                          ("bench_agent_overhead", "--agent-cores"), ("bench_tvm", "--cores")])
def test_a_core_this_process_may_not_use_is_one_usage_line(script, flag, monkeypatch, capsys):
    """bench_core_load --core 99 exported its model, then stopped with the measuring child's OSError traceback as its
    message; the agent benchmarks failed or recorded nothing per model."""
    allowed = sorted(os.sched_getaffinity(0))
    missing = max(allowed) + 1
    cores = f"{allowed[0]},{missing}" if flag != "--core" else str(missing)
    assert refused(script, [flag, cores], monkeypatch, capsys) == (
        f"{script}: error: argument {flag}: core {missing} is not one this process may run on "
        f"({','.join(map(str, allowed))})")


class AgentStarted(Exception):
    """Raised where the benchmark would start its agent: the flags were read, nothing was measured."""


@pytest.mark.parametrize("agent_cores", [",", ", "])
def test_bench_tvm_schedules_skips_an_empty_agent_core(agent_cores, tmp_path, monkeypatch):
    """bench_tvm --schedules --agent-cores 0, exported its model, then ended in int('')'s ValueError traceback: its
    --cores skipped empty items, its --agent-cores did not."""
    from tests.bench_scripts import load

    script = next(s for s in SCRIPTS if s.name == "bench_tvm")
    module = load(script)
    started = []

    def agent(*, cores, **_):
        started.append(cores)
        raise AgentStarted

    monkeypatch.setattr(module, "LocalSession", agent)
    core = min(os.sched_getaffinity(0))
    monkeypatch.setattr(sys, "argv", [str(script), "--schedules", "none", "--archs", "0", "--threads-list", "1",
                                      "--cores", str(core), "--agent-cores", f"{core}{agent_cores}",
                                      "--store", str(tmp_path / "models")])
    with pytest.raises(AgentStarted):
        module.main()
    assert started == [[core]]


def test_a_checkpoint_past_the_budget_is_refused(monkeypatch, capsys):
    """bench_onboard --budget 5 --checkpoints 5,10 printed a 'loop n=10' column, the n=5 round's numbers again
    (the last round at or before 10), as if 10 had been measured; bench_onboard_uncertainty already refused it."""
    flags = ["--tasks", "N0", "--strategies", "loop", "--budget", "5", "--checkpoints", "5,10"]
    assert refused("bench_onboard", flags, monkeypatch, capsys) == \
        "bench_onboard: error: --checkpoints 5,10: past the budget of 5"


def test_a_budget_under_the_default_checkpoints_reports_those_within_it_and_the_budget(tmp_path, monkeypatch, capsys):
    """bench_onboard --budget 10 without --checkpoints was refused: its default 5,10,15,20 is past the budget."""
    out = tmp_path / "b.json"
    code, stdout, stderr = run_main(ROOT / "scripts" / "bench_onboard", [
        "--tasks", "N0", "--mode", "train", "--holdouts", "1", "--budget", "3", "--strategies", "random",
        "--json", out], monkeypatch, capsys)
    assert code == 0, stderr
    assert json.loads(out.read_text())["settings"]["checkpoints"] == "3" and "random n=3" in stdout


@pytest.mark.parametrize("script, flag", [("bench_onboard", "--scales"), ("bench_onboard", "--temperatures"),
                                          ("bench_search", "--limits")])
def test_a_list_of_numbers_with_a_word_in_it_is_one_usage_line(script, flag, monkeypatch, capsys):
    """bench_search --limits 5,x and bench_onboard --scales 1,x or --temperatures 1,x ended in float()'s ValueError
    traceback."""
    assert refused(script, [flag, "1.5,x"], monkeypatch, capsys) == \
        f"{script}: error: argument {flag}: expected a number > 0, got 'x' in '1.5,x'"


@pytest.mark.slow
def test_a_checkpoint_no_round_reaches_is_named(tmp_path, monkeypatch, capsys):
    """bench_onboard_uncertainty --checkpoints 1 (before the loop's first round) printed an empty table and wrote
    an empty summary without a word; the checkpoint is now named on stderr, and the others are reported. (One
    replayed device, a train device held out, not N0's six test devices: the checkpoints are the same code.)"""
    out = tmp_path / "u.json"
    code, _, stderr = run_main(ROOT / "scripts" / "bench_onboard_uncertainty", [
        "--tasks", "N0", "--mode", "train", "--holdouts", "1", "--budget", "5", "--checkpoints", "1,5",
        "--json", out], monkeypatch, capsys)
    assert code == 0, stderr
    assert "--checkpoints 1: no replayed round had 1 measurements (the loop's rounds start after its first picks)" \
        in stderr.splitlines()
    assert [r["n"] for r in json.loads(out.read_text())["summary"]] == [5, 5]  # N0, then all tasks


@pytest.mark.parametrize("flags, says", [
    (["--jobs", "0", "--store-jobs", "5"], "--store-jobs 5: give 0 (skip the store part) or at least 10"),
    (["--jobs", "2", "--devices", "3"], "--jobs 2 is split over --devices 3: give at least one job a device"),
])
def test_bench_soak_refuses_a_run_too_small_to_read(flags, says, monkeypatch, capsys):
    """bench_soak --store-jobs 5 wrote its 5 jobs and then ended in numpy's 'cannot reshape array of size 5 into
    shape (10,1)' (its times are read in tenths); --jobs 2 --devices 3 sampled 0 archs per device (ArchError)."""
    assert refused("bench_soak", flags, monkeypatch, capsys) == f"bench_soak: error: {says}"


@pytest.mark.parametrize("script, flags, says", [
    ("bench_search", ["--settings", "ful", "--seeds", "1", "--budget", "25"],
     "argument --settings: unknown setting(s) 'ful'; valid: full, pool"),
    ("bench_accuracy", ["--encodings", "vec,zcpp"],
     "argument --encodings: unknown encoding(s) 'zcpp'; valid: vec, zcp, zcpvec"),
    ("bench_zcp", ["--spaces", "nb201,foo", "--n", "0"], "argument --spaces: unknown space(s) 'foo'; valid: nb201, "
                                                         "fbnet"),
])
def test_an_unknown_word_in_a_list_is_refused_before_any_work(script, flags, says, monkeypatch, capsys, tmp_path):
    """bench_search --settings ful (a typo of full) set up its latency predictor, ran nothing, printed an empty
    table and wrote a JSON of no results, exit code 0; bench_accuracy --encodings vec,zcpp (with a proxy store) ran
    vec's curves, then stopped at zcpp; bench_zcp --spaces foo timed FBNet as 'foo' (any name but nb201 was)."""
    out = tmp_path / "s.json"
    assert refused(script, [*flags, "--json", str(out)], monkeypatch, capsys) == f"{script}: error: {says}"
    assert not out.exists()


@pytest.mark.parametrize("script, flag", [
    ("bench_onboard", "--tasks"), ("bench_onboard", "--strategies"), ("bench_onboard_uncertainty", "--tasks"),
    ("bench_predictors", "--tasks"), ("bench_campaign_overhead", "--devices"), ("bench_cross_space", "--devices"),
    ("bench_zcp", "--spaces"), ("bench_zcp", "--fbnet-check-proxies"), ("bench_tvm", "--schedules"),
    ("bench_tvm", "--cores"), ("bench_agent_repro", "--cores"), ("bench_agent_overhead", "--agent-cores"),
    ("bench_search", "--settings"), ("bench_accuracy", "--encodings")])
@pytest.mark.parametrize("text", ["", " , "])
def test_a_list_naming_nothing_is_one_usage_line(script, flag, text, monkeypatch, capsys):
    """`--tasks ''` or `--strategies ''` (a variable left unset) selected nothing, and bench_onboard printed an empty
    table; `--spaces ''` timed FBNet, `--schedules ''` ran the default comparison, `--cores ''` measured unpinned;
    `--settings ''` and `--encodings ''` were refused as an unknown name ''."""
    assert refused(script, [flag, text], monkeypatch, capsys) == \
        f"{script}: error: argument {flag}: {text!r} names nothing; give one or more, comma-separated"


@pytest.mark.slow
def test_bench_zcp_times_only_the_spaces_named(tmp_path, monkeypatch, capsys):
    """bench_zcp --spaces 'nb201,' timed FBNet too, for the empty item (anything not 'nb201' was FBNet)."""
    import torch

    out, threads = tmp_path / "z.json", torch.get_num_threads()
    try:
        code, _, stderr = run_main(ROOT / "scripts" / "bench_zcp", ["--spaces", "nb201, ", "--n", "1",
                                                                   "--batch-size", "2", "--json", out],
                                   monkeypatch, capsys)
    finally:  # bench_zcp times with one torch thread; the tests after it in this process keep theirs
        torch.set_num_threads(threads)
    assert code == 0, stderr
    assert [t["space"] for t in json.loads(out.read_text())["timings"]] == ["nb201"]


@pytest.mark.parametrize("missing", ["TIME", "HWL"])
def test_bench_onboard_scale_without_its_tools_is_one_line_before_any_work(missing, tmp_path, monkeypatch, capsys):
    """Without /usr/bin/time bench_onboard_scale wrote a store and ended in Popen's FileNotFoundError traceback;
    without the venv's hwl each size wrote its store and failed alone, in a row of the table."""
    from tests.bench_scripts import load

    script = next(s for s in SCRIPTS if s.name == "bench_onboard_scale")
    module = load(script)
    monkeypatch.setattr(module, missing, tmp_path / "absent")
    monkeypatch.setattr(module, "stored_device", None)  # a store written before the check would fail here
    monkeypatch.setattr(sys, "argv", [str(script), "--sizes", "3", "--json", str(tmp_path / "o.json")])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"bench_onboard_scale: error: {tmp_path / 'absent'} is missing: ")
    assert not (tmp_path / "o.json").exists()


def test_bench_cli_start_refuses_a_root_that_is_no_checkout(tmp_path, monkeypatch, capsys):
    assert refused("bench_cli_start", ["--root", str(tmp_path)], monkeypatch, capsys) == \
        f"bench_cli_start: error: argument --root: {tmp_path} is no hwl checkout: it has no harness/cli/__init__.py"
