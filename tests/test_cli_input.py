"""Bad input on the command line: one line naming the problem and exit status 2, not a traceback."""
import json
import os
from pathlib import Path

import pytest

from harness.cli import main as hwl_main
from tests.campaign_helpers import write_profile


@pytest.mark.parametrize("args, error", [
    (["space", "sample", "fbnet", "--n", "2", "--seed", "-1"], "argument --seed: expected a whole number >= 0, got -1"),
    (["train", "--space", "nb201", "--n-pretrain", "0", "--out", "m.pt"], "argument --n-pretrain: expected a whole "
                                                                          "number >= 1, got 0"),
    (["evaluate", "--task", "N0", "--first-seed", "x"], "argument --first-seed: expected a whole number >= 0, got 'x'"),
    (["zcp", "nb201", "--archs", "1", "--init-seed", "-3", "--out", "z.parquet"], "argument --init-seed"),
    (["zcp", "nb201", "--archs", "1", "--task-timeout-s", "0", "--out", "z.parquet"], "expected a number > 0, got 0"),
    # -n 0 printed nothing and -n -3 ran `tail -n -3` on the device, both exit 0
    (["logs", "pi-1", "-n", "0"], "argument -n/--lines: expected a whole number >= 1, got 0"),
    (["logs", "pi-1", "-n", "-3"], "argument -n/--lines: expected a whole number >= 1, got -3"),
])
def test_a_bad_number_is_a_usage_error(args, error, capsys):
    with pytest.raises(SystemExit) as stop:
        hwl_main(args)
    assert stop.value.code == 2 and error in capsys.readouterr().err


def _refused(args, capsys) -> str:
    assert hwl_main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("text, error", [
    (b'space = "nb201"\narchs = 5\ndevices = ["local-ort-1t"]\n', "key 'archs' must be a string"),
    (b'space = "nb201"\narchs = "1"\nseed = -5\ndevices = ["local-ort-1t"]\n', "key 'seed' must be a whole number "
                                                                                ">= 0, got -5"),
    (b'space = "nb201"\nname = 5\n', "key 'name' must be a string, got 5"),
    (b'\xff\xfe', "not a text (UTF-8) file"),
    # a device's profile given where the campaign file goes: 'unknown key device_class' named no way out
    (b'name = "pi"\ndevice_class = "cpu"\n[host]\nname = "local"\n[runtime]\nkind = "onnxruntime"\n',
     "c.toml is a device profile, not a campaign file: give it to --devices"),
])
def test_a_bad_campaign_file_is_refused_before_a_store_is_made(tmp_path, text, error, capsys):
    (tmp_path / "c.toml").write_bytes(text)
    err = _refused(["campaign", "run", tmp_path / "c.toml", "--store", tmp_path / "lab.db"], capsys)
    assert error in err and not (tmp_path / "lab.db").exists()


def test_a_profile_that_is_not_text_is_refused(tmp_path, capsys):
    (tmp_path / "p.toml").write_bytes(b'name = "x"\n\xff\n')
    assert "p.toml: not a text (UTF-8) file" in _refused(["profile", "show", tmp_path / "p.toml"], capsys)


def test_ssh_only_commands_refuse_a_local_device(tmp_path, capsys):
    err = _refused(["logs", write_profile(tmp_path, "here")], capsys)
    assert "here uses transport 'local': deploy, undeploy and logs are for 'ssh' devices" in err


@pytest.mark.parametrize("flags, error", [
    (["--arch", "nb201:99999"], "NB201 index 99999 is out of range"),
    (["--arch", "bogus:1"], "unknown search space 'bogus'"),
    (["--arch", "nb201:5", "--cores", str(os.cpu_count() + 3)], f"cores [{os.cpu_count() + 3}] are not available"),
    (["--arch", "nb201:5", "--policy", "repeats=1.5"], "timing policy field 'repeats' must be a whole number"),
    (["--arch", "nb201:5", "--policy", "model_timeout_s=0"], "model_timeout_s > 0"),
])
def test_measure_refuses_an_unknown_arch_or_core_before_measuring(flags, error, capsys):
    assert error in _refused(["measure", "--runtime", "torch", "--profile", "quick", *flags], capsys)


def test_evaluate_refuses_a_set_value_that_is_no_literal_before_evaluating(capsys):
    err = _refused(["evaluate", "--task", "N0", "--method", "hwl_ridge", "--set", "alpha=["], capsys)
    assert "--set 'alpha=[': '[' is neither a Python literal nor a plain word" in err


@pytest.mark.parametrize("flags, error", [
    (["--archs", "1,2", "--devices", "nosuchdev"], "unknown device 'nosuchdev'"),
    (["--archs", "99999", "--devices", "local-ort-1t"], "NB201 index 99999 is out of range"),
    # a stray comma named a device '' ("unknown device ''"); it names none, as in a campaign file
    (["--archs", "1,2", "--devices", "local-ort-1t,,nosuchdev,"], "unknown device 'nosuchdev'"),
    (["--archs", "1,2", "--devices", ", "], "no device given; name at least one profile"),
])
def test_a_refused_campaign_makes_no_store_file(tmp_path, flags, error, capsys):
    err = _refused(["campaign", "run", "--space", "nb201", *flags, "--store", tmp_path / "lab.db"], capsys)
    assert error in err and list(tmp_path.iterdir()) == []


def test_an_output_that_is_an_input_or_another_output_is_refused_and_left_alone(tmp_path, capsys):
    table = tmp_path / "m.csv"
    table.write_text("arch_index,device,latency_ms\n1,pi,2.0\n2,pi,3.0\n")
    model = tmp_path / "model.pt"
    model.write_bytes(b"a model")
    profile = write_profile(tmp_path, "here")
    for args, error in (
            (["adapt", model, "--device", "pi", "--measurements", table, "--out", tmp_path / "." / "m.csv"],
             f"--out {tmp_path / '.' / 'm.csv'} is also --measurements"),
            (["adapt", model, "--device", "pi", "--measurements", table, "--out", model], "is also the model file"),
            (["predict", model, "--device", "pi", "--archs", "1", "--out", model], "is also the model file"),
            (["predict", model, "--device", "pi", "--archs", f"@{table}", "--out", table],  # replaced the list
             f"--out {table} is also --archs"),
            (["train", "--space", "nb201", "--table", table, "--out", table], "is also --table"),
            (["onboard", profile, "--space", "nb201", "--store", tmp_path / "lab.db", "--out", tmp_path / "p.pt",
              "--report", tmp_path / "p.pt"], f"--out {tmp_path / 'p.pt'} is also --report"),
            (["onboard", profile, "--space", "nb201", "--store", tmp_path / "lab.db", "--out", tmp_path / "p.json"],
             "is also --report (by default --out's name with .json)")):
        assert error in _refused(args, capsys), args
    assert table.read_text().startswith("arch_index") and model.read_bytes() == b"a model"
    assert not (tmp_path / "lab.db").exists()


def test_onboard_never_writes_over_its_candidates_file_or_profile(tmp_path, capsys):
    """--report (or --table) naming the --candidates @FILE or the profile .toml replaced it after the run, so the
    rerun that resumes an onboarding read the report as its candidates."""
    candidates = tmp_path / "cands.txt"
    candidates.write_text("1\n2\n3\n")
    profile = write_profile(tmp_path, "here")
    before = profile.read_bytes()
    base = ["onboard", profile, "--space", "nb201", "--store", tmp_path / "lab.db", "--out", tmp_path / "p.pt"]
    assert f"--report {candidates} is also --candidates" in _refused(
        [*base, "--candidates", f"@{candidates}", "--report", candidates], capsys)
    assert f"--report {profile} is also the device profile" in _refused([*base, "--report", profile], capsys)
    assert candidates.read_text() == "1\n2\n3\n" and profile.read_bytes() == before
    assert not (tmp_path / "lab.db").exists()


def test_a_refused_data_import_makes_no_store_and_imports_none_of_its_files(tmp_path, capsys):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("arch_index,device,latency_ms\n1,pi,2.0\n")
    bad.write_text("arch_index,device,ms\n1,pi,2.0\n")
    assert "no 'latency_ms' column" in _refused(["data", "import", good, bad, "--store", tmp_path / "lab.db"],
                                                capsys)
    assert not (tmp_path / "lab.db").exists()


def test_status_all_help_says_it_lists_every_profile_as_it_does(tmp_path, monkeypatch, capsys):
    # `hwl status --help` said --all was "every ssh profile", but it lists the local ones too (their quarantine)
    import json

    monkeypatch.setenv("HOME", str(tmp_path))  # no user profiles: the shipped local ones only
    assert hwl_main(["status", "--all", "--json"]) == 0
    listed = {row["device"]: row["transport"] for row in json.loads(capsys.readouterr().out)}
    assert listed["local-ort-1t"] == "local"
    with pytest.raises(SystemExit):
        hwl_main(["status", "--help"])
    assert "every profile that hwl knows (ssh, local and command devices)" in " ".join(capsys.readouterr().out.split())


def test_a_seed_given_beside_a_campaign_file_draws_the_architectures(tmp_path):
    """`hwl campaign run c.toml --seed 7` drew the file's random:N with the file's seed: --seed counted only
    beside --archs, so asking for another sample planned (or found) the campaign already measured. A flag given
    beside the file is now used, and one not given leaves the file's setting (also beside --archs)."""
    from harness.campaign import resolve_plan
    from harness.cli import build_parser
    from harness.cli.campaign import campaign_spec
    from spaces import resolve_archs

    file = tmp_path / "c.toml"
    file.write_text('space = "nb201"\narchs = "random:5"\nseed = 1\ndevices = ["local-ort-1t"]\n')

    def spec(*flags):
        argv = ["campaign", "run", str(file), *flags]
        return campaign_spec(build_parser(argv).parse_args(argv))

    assert spec().seed == 1 and spec("--seed", "7").seed == 7 and spec("--seed", "0").seed == 0
    assert spec("--archs", "random:3").seed == 1
    assert resolve_plan(spec("--seed", "7")).archs == [str(a) for a in resolve_archs("nb201", "random:5", seed=7)]
    argv = ["campaign", "run", "--space", "nb201", "--archs", "random:5", "--devices", "local-ort-1t"]
    assert campaign_spec(build_parser(argv).parse_args(argv)).seed == 0  # no file: the flag's default


def _store_counts(db) -> dict:
    from harness.store import Store

    with Store(db, readonly=True) as st:
        return {t: int(st.query(f"SELECT COUNT(*) AS n FROM {t}")["n"][0]) for t in ("campaigns", "jobs", "imported")}


@pytest.mark.parametrize("command", [
    ["campaign", "run", "--space", "nb201", "--archs", "0-2", "--devices", "local-ort-1t", "--profile", "quick"],
    ["onboard", "local-ort-1t", "--space", "nb201", "--budget", "3", "--profile", "quick"],
])
def test_an_artifact_folder_that_is_a_file_is_refused_before_a_campaign_is_planned(tmp_path, command, capsys):
    """`--artifacts FILE` was refused only once the coordinator ran, after the campaign (or the onboarding's
    first batch) was planned into the store: its queued jobs stayed there."""
    table, db, in_the_way = tmp_path / "t.csv", tmp_path / "lab.db", tmp_path / "models"
    table.write_text("arch_index,device,latency_ms\n1,pi,2.0\n2,pi,3.0\n")
    assert hwl_main(["data", "import", str(table), "--store", str(db)]) == 0
    in_the_way.write_text("not a folder")
    before = _store_counts(db)
    out = ["--out", tmp_path / "p.pt"] if command[0] == "onboard" else []
    err = _refused([*command, "--store", db, "--artifacts", in_the_way, *out], capsys)
    assert f"cannot write the artifact folder {in_the_way}: {in_the_way} is a file, not a folder" in err
    assert _store_counts(db) == before == {"campaigns": 0, "jobs": 0, "imported": 2}
    new_store = tmp_path / "new" / "lab.db"  # nor is a store made: an empty one was left behind
    _refused([*command, "--store", new_store, "--artifacts", in_the_way, *out], capsys)
    assert not new_store.exists() and not new_store.with_name("lab.db-locks").exists()
    assert not new_store.parent.exists()  # nor its folder, made empty by the store's check


def test_a_refused_onboarding_leaves_no_folder_for_its_outputs(tmp_path, capsys):
    """The checks of --out, --table and --report made their folders; bad --candidates, found after them, left
    those folders empty."""
    out, report = tmp_path / "newdir" / "p.pt", tmp_path / "deep" / "er" / "r.json"
    err = _refused(["onboard", "local-ort-1t", "--space", "nb201", "--store", tmp_path / "lab.db", "--out", out,
                    "--report", report, "--candidates", "zz"], capsys)
    assert "zz" in err and list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept"  # a folder that was there before is left, as it was
    kept.mkdir()
    _refused(["onboard", "local-ort-1t", "--space", "nb201", "--store", tmp_path / "lab.db", "--out", kept / "p.pt",
              "--candidates", "zz"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"] and list(kept.iterdir()) == []


def _ssh_profile(folder, *, known_hosts=None, key=None):
    """An ssh device at a loopback port nothing listens on: every case below is refused before it is reached."""
    from tests.sshd import free_port, make_key

    key = key or make_key(folder / "k")
    lines = ['name = "pi-x"', 'device_class = "embedded_cpu"', "", "[host]", 'name = "pi-x"', 'transport = "ssh"',
             'address = "127.0.0.1"', f"port = {free_port()}", 'user = "root"', f'key = "{key}"',
             *([f'known_hosts = "{known_hosts}"'] if known_hosts else []), "", "[runtime]", 'kind = "onnxruntime"']
    (folder / "pi-x.toml").write_text("\n".join(lines) + "\n")
    return folder / "pi-x.toml"


def _not_known_hosts(folder, kind):
    path = folder / "kh"
    path.mkdir() if kind == "folder" else path.write_bytes(b"\x9f\xff not text\n")
    return path, {"folder": f"known_hosts file {path} is a folder",
                  "binary": f"cannot read known_hosts file {path} (not a text file)"}[kind]


@pytest.mark.parametrize("kind", ["folder", "binary"])
@pytest.mark.parametrize("command", ["deploy", "undeploy", "status", "logs"])
def test_a_known_hosts_flag_that_is_no_known_hosts_file_is_one_line(tmp_path, command, kind, capsys):
    """--known-hosts naming a folder or a binary file ended deploy, undeploy, status and logs in paramiko's
    IsADirectoryError / UnicodeDecodeError traceback."""
    path, error = _not_known_hosts(tmp_path, kind)
    err = _refused([command, _ssh_profile(tmp_path), "--known-hosts", path], capsys)
    assert error in err and len(err.strip().splitlines()) == 1


def test_deploy_refuses_artifacts_with_no_selftest_before_reaching_a_device(tmp_path, capsys):
    """`hwl deploy pi-x --no-selftest --artifacts DIR` was taken, and DIR never used: no self-test exports a model."""
    err = _refused(["deploy", _ssh_profile(tmp_path), "--no-selftest", "--artifacts", tmp_path / "art"], capsys)
    assert err == ("hwl deploy: error: --artifacts is where the self-test model is exported, and --no-selftest "
                   "exports none: give one of them\n")
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("kind", ["folder", "binary"])
def test_a_profiles_known_hosts_that_is_no_known_hosts_file_is_one_line(tmp_path, kind, capsys):
    path, error = _not_known_hosts(tmp_path, kind)
    assert error in _refused(["logs", _ssh_profile(tmp_path, known_hosts=path)], capsys)


def test_deploy_refuses_an_artifact_folder_that_is_a_file_before_reaching_a_device(tmp_path, capsys):
    """The self-test model's export into `--artifacts FILE` ended `hwl deploy` in NotADirectoryError's traceback,
    after the agent was pushed and its runtime installed."""
    in_the_way = tmp_path / "models"
    in_the_way.write_text("not a folder")
    err = _refused(["deploy", _ssh_profile(tmp_path), "--artifacts", in_the_way], capsys)
    assert f"cannot write the artifact folder {in_the_way}: {in_the_way} is a file, not a folder" in err


@pytest.mark.parametrize("value, error", [
    ("-1", "method 'hwl_ridge' cannot run with --set alpha=-1: InvalidParameterError: The 'alpha' parameter of Ridge "
           "must be a float in the range [0.0, inf)"),
    ("abc", "method 'hwl_ridge' cannot run with --set alpha='abc': ValueError: could not convert string to float"),
])
def test_a_set_value_the_method_cannot_use_is_one_line(value, error, capsys):
    """A --set value of the right name but a wrong value is only stored by the constructor, as scikit-learn's
    contract asks, so it failed at the first fit, in a traceback from inside scikit-learn naming no flag."""
    err = _refused(["evaluate", "--task", "N0", "--method", "hwl_ridge", "--samples", "5", "--trials", "1",
                    "--set", f"alpha={value}"], capsys)
    assert error in err and len(err.strip().splitlines()) == 1


SHARED_ACCURACY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201_accuracy.csv"
_SEARCH = ["search", "--device", "raspi4", "--max-latency-ms", "25", "--budget", "30", "--seeds", "1"]


@pytest.mark.parametrize("args, what", [
    (["profile", "show", "{dir}"], "device profile file {dir}"),
    (["campaign", "run", "--space", "nb201", "--archs", "1", "--devices", "{dir}", "--store", "{tmp}/lab.db"],
     "device profile file {dir}"),
    (["measure", "{dir}", "--profile", "quick"], "model file {dir}"),
    (["measure", "{tmp}/t.csv", "--runtime", "tvm", "--option", "library={dir}", "--profile", "quick"],
     "TVM library {dir}"),
    (["adapt", "{dir}", "--device", "pi", "--measurements", "{tmp}/t.csv", "--out", "{tmp}/a.pt"], "model file {dir}"),
    (["predict", "{dir}", "--device", "pi", "--archs", "1", "--out", "{tmp}/p.parquet"], "model file {dir}"),
    (["train", "--space", "nb201", "--table", "{dir}", "--out", "{tmp}/m.pt"], "latency table {dir}"),
    ([*_SEARCH, "--accuracy-table", "{dir}"], "accuracy table {dir}"),
    pytest.param([*_SEARCH, "--accuracy-table", str(SHARED_ACCURACY), "--encoding", "zcp", "--zcp-table", "{dir}"],
                 "proxy table {dir}", marks=pytest.mark.skipif(not SHARED_ACCURACY.is_file(),
                                                                reason="needs ../shared/data")),
    (["logs", "{key_profile}"], "key file {dir} for pi-x"),
])
def test_a_folder_given_for_a_file_is_called_a_folder(tmp_path, args, what, capsys):
    """A folder where a profile, model, table or key file goes was said not to exist, which sent the user
    looking for a typo in a name that was right."""
    folder = tmp_path / "x.toml"
    folder.mkdir()
    (tmp_path / "t.csv").write_text("arch_index,device,latency_ms\n1,pi,2.0\n2,pi,3.0\n")
    fill = {"dir": folder, "tmp": tmp_path}
    if "{key_profile}" in args:
        fill["key_profile"] = _ssh_profile(tmp_path, key=folder)
    err = _refused([a.format(**fill) for a in args], capsys)
    assert f"{what.format(**fill)} is a folder, not a file" in err


@pytest.mark.parametrize("args, what", [
    (["data", "import", "{pipe}", "--store", "{tmp}/lab.db"], "{pipe}"),
    (["adapt", "{tmp}/m.pt", "--device", "pi", "--measurements", "{pipe}", "--out", "{tmp}/a.pt"],
     "latency table {pipe}"),
])
def test_a_pipe_given_for_a_table_is_called_a_pipe(tmp_path, args, what, capsys):
    """`hwl campaign export --out - | hwl data import /dev/stdin` (the export writes to a pipe) was refused with
    '/dev/stdin does not exist', which it does: the reader needs a file. A FIFO stands in for the pipe here."""
    pipe = tmp_path / "lab.parquet"
    os.mkfifo(pipe)
    assert hwl_main(["train", "--space", "nb201", "--method", "hwl_ridge", "--devices", "1080ti_1,pixel3",
                     "--n-pretrain", "50", "--out", str(tmp_path / "m.pt")]) == 0
    capsys.readouterr()
    err = _refused([a.format(pipe=pipe, tmp=tmp_path) for a in args], capsys)
    assert f"{what.format(pipe=pipe)} is a pipe or a device, not a file: save it to a file" in err
    assert not (tmp_path / "lab.db").exists()


def test_an_export_batch_too_large_for_memory_is_one_line(tmp_path, capsys):
    """torch.zeros of the example input sat outside the export's error handling: `--batch-size 99999999999`
    ended in torch's RuntimeError traceback ('DefaultCPUAllocator: can't allocate memory')."""
    err = _refused(["export", "nb201", "1", "--out", tmp_path / "onnx", "--batch-size", "99999999999"], capsys)
    assert "not enough memory to export nb201 1 at batch size 99999999999" in err
    assert len(err.strip().splitlines()) == 1 and not list((tmp_path / "onnx").glob("*.onnx"))


@pytest.mark.parametrize("args", [["space", "sample", "fbnet", "--n", "99999999999"],
                                  ["export", "fbnet", "--archs", "random:99999999999", "--out", "{tmp}"]])
def test_more_fbnet_samples_than_memory_holds_is_one_line(tmp_path, args, capsys):
    """FBNet's 9**22 architectures bound no sample size, and numpy's MemoryError for 16 TiB of codes was a
    traceback; past a million it is refused before any is drawn (d5d1026)."""
    err = _refused([a.format(tmp=tmp_path) for a in args], capsys)
    assert "cannot sample 99,999,999,999 FBNet architectures: at most 1,000,000 at once" in err


def _tvm_libraries_case(folder, case):
    """A --tvm-libraries folder that is not what scripts/build_tvm_libraries writes, and what deploy says of it."""
    libs, name = folder / "tvm-libs", "ab" * 32 + ".so"
    if case == "file":
        libs.write_text("")
        return libs, f"--tvm-libraries {libs} is not a folder; give the --out folder of scripts/build_tvm_libraries"
    libs.mkdir()
    if case == "empty":
        (libs / "model.so").write_bytes(b"named by no model's sha256")
        return libs, f"--tvm-libraries {libs} holds no <model sha256>.so library"
    (libs / name).write_bytes(b"library bytes")
    if case == "no digest":
        return libs, f"TVM library {libs / name} has no readable {name}.sha256 beside it"
    (libs / f"{name}.sha256").write_text("0" * 64 + "\n")
    return libs, f"TVM library {libs / name} has sha256 "


@pytest.mark.parametrize("case", ["file", "empty", "no digest", "changed"])
def test_deploy_refuses_a_tvm_library_folder_the_agent_could_not_use_before_reaching_a_device(tmp_path, case, capsys):
    profile = _ssh_profile(tmp_path)
    profile.write_text(profile.read_text().replace('kind = "onnxruntime"', 'kind = "tvm"\n[runtime.options]\n'
                                                                           'library_dir = "/home/pi/tvm-libs"'))
    libs, error = _tvm_libraries_case(tmp_path, case)
    err = _refused(["deploy", profile, "--tvm-libraries", libs], capsys)
    assert error in err and len(err.strip().splitlines()) == 1, err


def test_deploy_refuses_tvm_libraries_for_a_profile_without_library_dir(tmp_path, capsys):
    profile = _ssh_profile(tmp_path)  # an onnxruntime device: no library_dir to copy into
    libs, _ = _tvm_libraries_case(tmp_path, "changed")
    err = _refused(["deploy", profile, "--tvm-libraries", libs], capsys)
    assert f"pi-x: --tvm-libraries needs a tvm profile with runtime.options.library_dir (an absolute folder on " \
           f"the device), and {profile} has none" in err


# Every flag that names a file or folder, as `--flag=~/x` (no shell expands that tilde) or a quoted "~/x".
PATH_FLAGS = [
    (["adapt", "~/x", "--device", "d", "--out=~/x"], ("model", "out")),
    (["adapt", "m", "--device", "d", "--out", "o", "--measurements=~/x", "--store=~/x"], ("table", "store")),
    (["campaign", "run", "~/x", "--store=~/x", "--artifacts=~/x", "--known-hosts=~/x"],
     ("file", "store", "artifacts", "known_hosts")),
    (["campaign", "status", "--store=~/x"], ("store",)),
    (["campaign", "export", "--store=~/x", "--out=~/x"], ("store", "out")),
    (["data", "import", "~/x", "--store=~/x", "--mapping=~/x"], ("store", "mapping")),
    (["deploy", "d", "--artifacts=~/x", "--tvm-libraries=~/x"], ("artifacts", "tvm_libraries")),
    (["status", "d", "--store=~/x"], ("store",)),
    (["evaluate", "--json=~/x", "--plot=~/x", "--heatmap=~/x", "--test-table=~/x"],
     ("json", "plot", "heatmap", "table")),
    (["export", "nb201", "1", "--out=~/x"], ("out",)),
    (["measure", "~/x", "--cache-dir=~/x"], ("model", "cache_dir")),
    (["onboard", "d", "--space", "nb201", "--store=~/x", "--out=~/x", "--table=~/x", "--report=~/x",
      "--artifacts=~/x"], ("store", "out", "table", "report", "artifacts")),
    (["predict", "~/x", "--device", "d", "--archs", "1", "--out=~/x"], ("model", "out")),
    (["profile", "new", "p", "--transport", "local", "--out=~/x"], ("out",)),
    (["search", "--device", "d", "--max-latency-ms", "1", "--accuracy-table=~/x", "--zcp-table=~/x",
      "--zcp-store=~/x", "--json=~/x", "--latency-table=~/x"], ("accuracy_table", "zcp_table", "zcp_store", "json",
                                                                "table")),
    (["store", "backup", "~/x", "~/x"], ("store", "dest")),
    (["store", "check", "~/x"], ("store",)),
    (["train", "--space", "nb201", "--out=~/x", "--table=~/x"], ("out", "table")),
    (["zcp", "nb201", "--archs", "1", "--data=~/x", "--store=~/x", "--out=~/x"], ("data", "store", "out")),
]


@pytest.mark.parametrize("argv, dests", PATH_FLAGS, ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else None)
def test_every_file_or_folder_flag_given_with_a_tilde_names_the_home_folder(argv, dests, monkeypatch):
    """`hwl predict ... --out=~/p.csv` wrote into a folder named '~' in the working folder, `hwl profile new
    --out=~/p.toml` failed with a traceback: each command expanded the tilde of some flags only."""
    from harness.cli import build_parser

    monkeypatch.setenv("HOME", "/home/lab")
    args = build_parser(argv).parse_args(argv)
    assert {dest: getattr(args, dest) for dest in dests} == {dest: "/home/lab/x" for dest in dests}
    if argv[:2] == ["data", "import"]:
        assert args.files == ["/home/lab/x"]


def test_a_profile_written_to_out_equals_tilde_is_in_the_home_folder(tmp_path, monkeypatch, capsys):
    # it was a FileNotFoundError traceback: '~/.partial-...-p.toml'
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    argv = ["profile", "new", "px", "--transport", "local", "--runtime", "onnxruntime", "--out=~/px.toml"]
    assert hwl_main(argv) == 0
    assert (home / "px.toml").is_file() and not (tmp_path / "~").exists()


def test_a_store_given_as_store_equals_tilde_is_the_one_in_the_home_folder(tmp_path, monkeypatch, capsys):
    """No shell expands the tilde of --store=~/lab.db: the import made ~/lab.db-locks in the home folder, then
    failed with 'cannot open store ~/lab.db for writing ... give a path in a folder you can write to'; status said
    it did not exist; a campaign would have put its models in a folder named '~'. hwl expands it, as for --out."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pi.csv").write_text("arch_index,device,latency_ms\n4,pi,2.5\n")
    assert hwl_main(["data", "import", str(tmp_path / "pi.csv"), "--store=~/lab.db"]) == 0
    capsys.readouterr()
    assert hwl_main(["store", "check", "~/lab.db"]) == 0
    assert capsys.readouterr().out == (f"{home / 'lab.db'}: integrity ok: 0 campaigns, 0 jobs (0 done), 0 results "
                                       "(0 accepted latencies), 1 imported latency\n")
    assert (home / "lab.db").is_file()
    from harness.cli import build_parser
    from harness.cli.campaign import _options

    args = build_parser(["campaign"]).parse_args(["campaign", "resume", "--store=~/lab.db"])
    assert _options(args).artifact_dir == home / "lab-artifacts"
    args = build_parser(["campaign"]).parse_args(["campaign", "resume", "--store=~/lab.db", "--artifacts=~/models"])
    assert _options(args).artifact_dir == home / "models"  # was a folder '~/models' in the working folder
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("tail", [["-1"], ["--", "-1"], ["0", "--", "-1"]])
def test_an_export_arch_given_after_its_options_is_read_as_one(tail, tmp_path, capsys):
    # argparse filled the archs, empty, at the space name: an arch after --out was 'unrecognized arguments'
    err = _refused(["export", "nb201", "--out", tmp_path / "art", *tail], capsys)
    assert err == "hwl export: error: NB201 index -1 is out of range: valid indices are 0..15624\n"
    assert not (tmp_path / "art").exists()


def test_devices_given_after_an_option_are_read_and_an_unknown_option_still_refused(capsys):
    assert hwl_main(["status", "local-ort-1t", "--json", "local-ort-2t"]) == 0
    assert [row["device"] for row in json.loads(capsys.readouterr().out)] == ["local-ort-1t", "local-ort-2t"]
    with pytest.raises(SystemExit) as stop:
        hwl_main(["status", "local-ort-1t", "--json", "--jsn"])
    assert stop.value.code == 2 and capsys.readouterr().err.endswith("hwl: error: unrecognized arguments: --jsn\n")
