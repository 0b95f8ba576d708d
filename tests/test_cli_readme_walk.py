"""Mistakes a new user makes typing README's commands: one line that names the way out, nothing stored lost."""
import json
import logging
from pathlib import Path

import pytest

from harness.cli import main as hwl_main
from tests.campaign_helpers import write_profile


def _refused(args, capsys) -> str:
    assert hwl_main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_a_profile_name_given_as_a_file_says_to_give_the_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _refused(["status", "local-ort-1t.toml"], capsys)
    assert "local-ort-1t.toml does not exist (a profile named 'local-ort-1t' is known: give its name alone)" in err


def test_a_profile_file_given_as_a_name_says_to_give_the_file(tmp_path, monkeypatch, capsys):
    write_profile(tmp_path, "my-board")
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "lab.db"
    err = _refused(["onboard", "my-board", "--space", "nb201", "--budget", "2", "--store", store,
                    "--out", tmp_path / "p.pt"], capsys)
    assert "unknown device 'my-board'" in err and "(there is a profile file my-board.toml: give that)" in err
    assert not store.exists()


@pytest.mark.parametrize("space, archs, error", [
    ("nb201", "rand:3", "'rand:3' is neither an NB201 index nor an arch string; a selection is all, random:N, indices, "
                        "ranges A-B, arch strings or @FILE"),
    ("nb201", "archs.txt", "; archs.txt is a file: give @archs.txt"),
    ("fbnet", "random3", "'random3' is no FBNet key (22 comma-separated op names, or op indices joined by '_'); "
                         "a selection is random:N, keys or @FILE"),
])
def test_a_selection_that_names_no_architecture_says_what_a_selection_is(tmp_path, monkeypatch, space, archs, error,
                                                                         capsys):
    """'rand:3' (for random:3) or a file without its '@' was answered "NB201 arch string needs 3 nodes separated
    by '+', got 1 in 'rand:3'" or "an FBNet architecture has 22 layers, got 1"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "archs.txt").write_text("0\n17\n")
    store = tmp_path / "lab.db"
    err = _refused(["campaign", "run", "--space", space, "--archs", archs, "--devices", "local-ort-1t",
                    "--store", store], capsys)
    assert error in err and not store.exists()


@pytest.mark.parametrize("flags", [
    ["--command", "python tool.py --graph {modle}"],
    ["--option", 'command=["python", "tool.py", "--graph", "{modle}"]'],
])
def test_measure_refuses_a_placeholder_typo_in_its_command_as_a_profile_does(tmp_path, flags, capsys):
    """A profile's '{modle}' is refused when it is loaded; `hwl measure --command` ran the tool with the
    literal '{modle}' and printed its traceback as a runtime_error record."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not looked at")
    err = _refused(["measure", model, "--runtime", "command", *flags, "--regex", "([0-9.]+) ms",
                    "--profile", "quick"], capsys)
    assert "--command names unknown placeholder(s) {modle}; known: {model}, {sha256}" in err


@pytest.mark.parametrize("n, words", [(3, "3 archs of the store were measured"),
                                      (1, "1 arch of the store was measured")])
def test_onboarding_says_plainly_how_many_stored_archs_it_measures_again(n, words, caplog):
    """hwl onboard said "3 archs were of the store measured while the device drifted" (README walk)."""
    from harness.onboard import warn_remeasuring_drifted

    with caplog.at_level(logging.WARNING):
        warn_remeasuring_drifted("local-ort-1t", n, n)
    assert f"local-ort-1t: {words} while the device drifted (canary_drift); measuring {n} of them again" in caplog.text


@pytest.mark.parametrize("command", [
    ["train", "--space", "nb201", "--out", "m.pt"],
    ["evaluate", "--space", "nb201", "--train-devices", "pixel3"],
])
def test_a_folder_given_as_the_predictor_commands_store_is_called_a_folder(tmp_path, monkeypatch, command, capsys):
    """`hwl train --store out/demo` (the folder, not out/demo/lab.db) said "store out/demo does not exist", as
    hwl adapt, evaluate and search did (one function reads their stores)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    err = _refused([*command, "--store", "demo"], capsys)
    assert "store demo is a folder, not a file" in err


@pytest.mark.parametrize("arch, error", [
    ("nb201", "--arch nb201: give SPACE:KEY[:DATASET], e.g. nb201:1462"),
    ("nb201:rand", "'rand' is neither an NB201 index nor an arch string"),
])
def test_measure_arch_without_a_key_or_with_a_word_says_what_it_takes(arch, error, capsys):
    """`hwl measure --runtime torch --arch nb201` said "NB201 arch string needs 3 nodes separated by '+', got 1
    in ''"."""
    err = _refused(["measure", "--runtime", "torch", "--arch", arch, "--profile", "quick"], capsys)
    assert error in err and "selection" not in err


def test_measure_refuses_arch_beside_an_onnx_file(tmp_path, capsys):
    """`hwl measure m.onnx --arch nb201:1` timed the file and labelled its record nb201:1, whatever the file held:
    --arch builds the network for --runtime torch only."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not looked at")
    err = _refused(["measure", model, "--arch", "nb201:1", "--profile", "quick"], capsys)
    assert "--arch is for --runtime torch" in err and "leave --arch out" in err



@pytest.mark.parametrize("flag, value", [("--unit", "ms"), ("--regex", "([0-9.]+) ms"), ("--json-path", "a.b"),
                                         ("--command", "tool {model}")])
def test_measure_names_a_command_runtime_flag_given_to_another_runtime(tmp_path, flag, value, capsys):
    """`hwl measure m.onnx --unit ms` said "unknown onnxruntime option(s) unit", an --option the user never gave."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not looked at")
    err = _refused(["measure", model, flag, value, "--profile", "quick"], capsys)
    assert f"{flag} is for --runtime command, not ort" in err and "option" not in err


def test_a_store_whose_first_campaign_stored_nothing_says_how_to_go_on(tmp_path, capsys):
    """A first campaign stopped before its first result (killed, Ctrl-C while the canary ran): adapt, train,
    evaluate and search --store said "store lab.db holds no nb201 latencies yet", where a store with other
    latencies says what became of the device's jobs and the resume line."""
    from harness.campaign import CampaignSpec, plan_campaign
    from harness.store import Store

    profile = write_profile(tmp_path, "lab-ort")
    db = tmp_path / "lab.db"
    with Store(db) as store:
        plan_campaign(store, CampaignSpec(space="nb201", archs="0-3", devices=(str(profile),), name="first"))
    assert hwl_main(["train", "--space", "nb201", "--devices", "pixel3,raspi4", "--method", "hwl_ridge",
                     "--n-pretrain", "50", "--out", str(tmp_path / "m.pt")]) == 0
    line = (f"store {db} holds no accepted nb201 latency of lab-ort (campaign first: 4 queued (device active)): once "
            f"it has some (hwl campaign resume --store {db} --name first, or wait for the coordinator running it), "
            "run this again")
    commands = [["adapt", tmp_path / "m.pt", "--device", "lab-ort", "--store", db, "--out", tmp_path / "a.pt"],
                ["train", "--space", "nb201", "--store", db, "--out", tmp_path / "a.pt"],
                ["evaluate", "--space", "nb201", "--train-devices", "pixel3", "--store", db]]
    accuracy = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201_accuracy.csv"
    if accuracy.is_file():  # research data beside the checkout, read before the latencies
        commands.append(["search", "--device", "lab-ort", "--max-latency-ms", "25", "--accuracy-table", accuracy,
                         "--store", db])
    capsys.readouterr()
    for command in commands:
        assert line in _refused(command, capsys), command
    assert not (tmp_path / "a.pt").exists()
    with Store(db, readonly=True) as store:  # nothing stored was lost
        assert store.query("SELECT count(*) AS n FROM jobs WHERE state = 'queued'")["n"][0] == 4


def test_campaign_resume_help_says_it_goes_on_on_the_cluster_its_campaign_joined(capsys):
    """`hwl campaign resume --help` said --address defaults to "start a local Ray", where a resume given none goes on
    on the Ray cluster the campaign's last run joined (README, and the line the resume prints)."""
    with pytest.raises(SystemExit):
        hwl_main(["campaign", "resume", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("--address ADDRESS join this Ray cluster (default: RAY_ADDRESS if set, else the Ray cluster the "
            "campaign's last run joined, if any, else start a local Ray)") in text


def test_campaign_resume_help_says_the_flags_it_is_not_given_come_from_the_last_run(capsys):
    """7a682ad made a resume take --artifacts, --artifact-quota-gb, --canary-every and --known-hosts from the
    campaign's last run, where its help gave only a first run's defaults (beside the store, 50, ~/.ssh)."""
    with pytest.raises(SystemExit):
        hwl_main(["campaign", "resume", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("--artifacts, --artifact-quota-gb, --canary-every and --known-hosts not given are taken from the "
            "campaign's last run") in text


@pytest.mark.parametrize("name", ["my_pi.parquet", "my_pi_help.csv.gz"])
def test_a_table_given_as_the_store_says_which_flag_takes_it(tmp_path, name, capsys):
    """`hwl adapt model.pt --device my_pi --store my_pi.parquet` (README: "--measurements my_pi.parquet ... or --store
    lab.db") said "not an hwl store (file is not a database); give a new file name or an existing store"."""
    table = tmp_path / name
    table.write_bytes(b"PAR1 not a database, as any table file is not")
    err = _refused(["train", "--space", "nb201", "--store", table, "--out", tmp_path / "m.pt"], capsys)
    assert f"{table} is not an hwl store (file is not a database); by its name it is a latency table: give it by a " \
           "predictor command's table flag (adapt --measurements," in err and "new file name" not in err
    assert table.read_bytes().startswith(b"PAR1")


def test_a_store_given_as_a_table_says_to_give_it_as_the_store(tmp_path, capsys):
    """`hwl train --table lab.db` (or adapt --measurements, evaluate --test-table) said only "unknown format; use
    .csv, .csv.gz or .parquet", and `hwl data import lab.db` "unknown table format '.db'"."""
    from harness.store import Store

    db = tmp_path / "lab.db"
    Store(db).close()
    err = _refused(["train", "--space", "nb201", "--table", db, "--out", tmp_path / "m.pt"], capsys)
    assert err.rstrip().endswith("unknown format; use .csv, .csv.gz or .parquet (it is an SQLite file, an hwl store: "
                                 "give it as --store)")
    err = _refused(["data", "import", db, "--store", tmp_path / "other.db"], capsys)
    assert err.rstrip().endswith("(it is an SQLite file, an hwl store: export its campaigns with hwl campaign export, "
                                 "and import that file)")
    assert not (tmp_path / "other.db").exists()


@pytest.mark.parametrize("flags, error", [
    (["--threads", "0"], "argument --threads: expected a whole number >= 1, got 0"),
    (["--batch", "0"], "argument --batch: expected a whole number >= 1, got 0"),
    (["--input-shape", "0,3,32,32"], "--input-shape '0,3,32,32': expected whole numbers >= 1"),
    (["--cores", "1,1"], "--cores '1,1' names 1 twice"),
])
def test_measure_names_its_own_flag_where_a_number_is_refused(tmp_path, flags, error, capsys):
    """`hwl measure m.onnx --threads 0` said "measure: 'threads' must be >= 1, got 0" (--batch, --input-shape and
    --cores alike): the agent protocol's field, where the user typed a flag."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not looked at")
    try:
        rc = hwl_main(["measure", str(model), *flags, "--profile", "quick"])
    except SystemExit as exc:  # argparse's refusal: its usage, then the line
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and error in err.strip().splitlines()[-1] and "measure: '" not in err, err


@pytest.mark.parametrize("command, choices", [("campaign", "{run,resume,status,export}"),
                                              ("store", "{backup,check,recover}")])
def test_a_command_without_its_subcommand_names_the_choices(command, choices, capsys):
    """`hwl campaign` said "the following arguments are required: campaign_command", a variable's name."""
    with pytest.raises(SystemExit) as exited:
        hwl_main([command])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (f"hwl {command}: error: the following arguments are "
                                                                f"required: {choices}")


@pytest.mark.parametrize("flag", ["--zcp-store", "--zcp-table"])
def test_search_refuses_proxies_its_vec_encoding_would_not_read(tmp_path, flag, capsys):
    """`hwl search ... --zcp-store zcp.db` without --encoding zcp searched on the Vec encoding, the proxies unread."""
    (tmp_path / "proxies").write_text("")
    err = _refused(["search", "--device", "raspi4", "--max-latency-ms", "25", "--accuracy-table", tmp_path / "acc.csv",
                    flag, tmp_path / "proxies"], capsys)
    assert f"{flag} gives the proxies of --encoding zcp or zcpvec; --encoding vec (the default) reads none" in err


def test_measure_refuses_a_cache_dir_its_runtime_never_uses(tmp_path, capsys):
    """`hwl measure m.onnx --cache-dir c` timed onnxruntime and never looked at c: only TVM compiles."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not looked at")
    err = _refused(["measure", model, "--cache-dir", tmp_path / "c", "--profile", "quick"], capsys)
    assert "--cache-dir keeps TVM's compiled libraries, for --runtime tvm, not ort" in err


def test_status_says_what_a_command_devices_dash_means(tmp_path, capsys):
    """`hwl status` showed a phone's reachable as '-', unexplained: hwl reaches it through its own tool only."""
    phone = write_profile(tmp_path, "phone", runtime="command", push="true {model}",
                          options={"command": "true {model}", "regex": "([0-9.]+) ms"})
    here = write_profile(tmp_path, "here")
    capsys.readouterr()
    assert hwl_main(["status", str(phone), str(here)]) == 0
    assert "(reachable -: a command device is reached through its own tool, which hwl status does not run)" in \
        capsys.readouterr().out
    assert hwl_main(["status", str(here)]) == 0
    assert "reachable -" not in capsys.readouterr().out


def _elsewhere(profile: Path, host: str) -> Path:
    """``profile`` with its [host] name changed to ``host``: a device a cluster campaign runs on that Ray node."""
    profile.write_text(profile.read_text().replace('name = "local"', f'name = "{host}"', 1))
    return profile


@pytest.mark.parametrize("host", ["local", "lab-pc-1"])
def test_status_names_the_tool_a_command_device_lacks_here(tmp_path, capsys, host):
    """`hwl status` of a phone whose vendor tool is not on this machine showed '-' and exited 0, where a campaign
    quarantines it at its start. Now it says so in one line naming the file and the key, and exits 1; for a device
    of another Ray host it also says that a campaign with --address runs the device on that host instead."""
    phone = write_profile(tmp_path, "phone", runtime="command", push="true {model}",
                          options={"command": "/nonexistent/vendor-tool {model}", "regex": "([0-9.]+) ms"})
    phone = _elsewhere(phone, host) if host != "local" else phone
    capsys.readouterr()
    assert hwl_main(["status", str(phone)]) == 1
    out = capsys.readouterr().out
    said = f"\nphone: {phone}: key 'runtime.options.command' of device phone runs '/nonexistent/vendor-tool', which"
    assert said in out, out
    elsewhere = "Ray node that offers host:lab-pc-1, which hwl status does not check from here"
    assert (elsewhere in out) == (host != "local")
    assert hwl_main(["status", str(phone), "--json"]) == 1
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["usable"], row["reachable"]) == (False, None) and "vendor-tool" in row["error"]


def test_status_of_a_local_device_of_another_ray_host_claims_no_reach(capsys):
    """`hwl status` of the CUDA example profile, a GPU server's local device, said reachable 'yes' here, on a
    machine that is not that server. Now it claims nothing (`-`, usable unknown: exit 0) and says where a campaign
    runs that device: here without --address, on the node that offers host:gpu-server-1 with it."""
    cuda = Path(__file__).parents[1] / "device_profiles" / "examples" / "gpu-server-cuda.toml"
    assert hwl_main(["status", str(cuda), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["reachable"], row["usable"], row["error"]) == (None, None, None)
    assert row["note"].startswith("[host] name 'gpu-server-1' is not 'local': a campaign without --address runs "
                                  "it here")
    assert "one with --address runs it on the Ray node that offers host:gpu-server-1, which hwl status does not " \
           "check from here" in row["note"]
    assert hwl_main(["status", str(cuda)]) == 0
    out = capsys.readouterr().out
    assert f"\na100-ort-bs1: {row['note']}\n" in out and "yes" not in out, out


@pytest.mark.parametrize("text", ["", "# tonight's picks, to be filled in\n\n"])
def test_an_architecture_file_naming_none_is_named(tmp_path, monkeypatch, text, capsys):
    """`--archs @archs.txt` of an empty file (or one of comments) said "the architecture selection is empty",
    naming no file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "archs.txt").write_text(text)
    err = _refused(["campaign", "run", "--space", "nb201", "--archs", "@archs.txt", "--devices", "local-ort-1t",
                    "--store", "lab.db"], capsys)
    assert "architecture file archs.txt names no architecture (it is empty, or holds comments only)" in err
    assert not (tmp_path / "lab.db").exists()


def test_an_empty_flag_beside_a_campaign_file_is_named_not_called_missing(tmp_path, monkeypatch, capsys):
    """`hwl campaign run night.toml --devices "$DEVS"` with DEVS unset said "missing --devices (or a campaign file
    that sets them)", though the file sets them: the empty flag had replaced them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "night.toml").write_text('space = "nb201"\narchs = "0,17"\ndevices = ["local-ort-1t"]\n')
    for flag, said in (("--devices", "no device given; name at least one profile (known: "),
                       ("--archs", "--archs '' names no architecture")):
        err = _refused(["campaign", "run", "night.toml", flag, "", "--store", "lab.db"], capsys)
        assert said in err and "missing" not in err
    assert not (tmp_path / "lab.db").exists()


def _options(parser, path=("hwl",)):
    """(command words, action) for every flag of ``parser`` and of its subcommands."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def test_every_flag_says_what_it_takes_and_its_default():
    """`--help` showed bare flags (`hwl campaign status --store STORE`, `hwl profile new --threads THREADS`,
    `hwl evaluate --first-seed FIRST_SEED`) and defaults it did not say (`hwl space sample --seed`: 0, `hwl zcp
    --data-seed`: 0, `hwl measure --runtime`: ort)."""
    from harness.cli import build_parser

    unsaid = []
    for path, action in _options(build_parser([])):
        default = action.default
        has_default = not (default is None or default is False or default in ([], ""))
        if not action.help or has_default and "default" not in action.help:
            unsaid.append(f"{' '.join(path)} {action.option_strings[-1]}")
    assert unsaid == []


def test_profile_new_takes_the_measurement_profile_as_profile_like_the_other_commands(tmp_path):
    """`hwl campaign run`, `hwl onboard` and `hwl measure` name the quick/standard choice --profile, `hwl profile new`
    named it --measurement alone (`--profile quick` was "unrecognized arguments")."""
    from harness.profiles import load_profile

    for flag, name in (("--profile", "a"), ("--measurement", "b")):
        out = tmp_path / f"{name}.toml"
        assert hwl_main(["profile", "new", name, flag, "quick", "--out", str(out)]) == 0
        assert load_profile(out).measurement == "quick"


def test_profile_new_takes_the_command_template_as_command_like_measure(tmp_path):
    """`hwl measure --command` and the profile's runtime.options.command name the tool's template; `hwl profile new`
    named it --run alone (`--command ...` was "unrecognized arguments")."""
    from harness.profiles import load_profile

    for flag, name in (("--command", "a"), ("--run", "b")):
        out = tmp_path / f"{name}.toml"
        assert hwl_main(["profile", "new", name, "--transport", "command", flag, "bench {sha256}",
                         "--regex", "([0-9.]+) ms", "--out", str(out)]) == 0
        assert load_profile(out).runtime.options_dict()["command"] == "bench {sha256}"
