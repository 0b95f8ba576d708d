"""Device profiles: shipped profiles load, every bad value is refused naming file and key."""
import json
from pathlib import Path

import pytest

from harness.errors import ProfileError
from harness.profiles import (available_profiles, load_profile, load_profiles, parse_profile,
                              profile_from_dict)
from tests.campaign_helpers import write_profile

GOOD = {
    "name": "pi-1", "device_class": "embedded_cpu", "thermal_domain": "pi-1-soc",
    "host": {"name": "pi-1", "transport": "local"},
    "runtime": {"kind": "onnxruntime", "threads": 2, "cores": [2, 3], "options": {"graph_optimization": "all"}},
    "workload": {"batch_size": 8, "dataset": "cifar10"},
    "measurement": {"profile": "standard", "cooldown_s": 1, "max_temp_c": 70, "policy": {"repeats": 3}},
}


def _bad(**changes):
    data = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        table = data
        for p in path:
            table = table[p]
        if value is KeyError:
            del table[key]
        else:
            table[key] = value
    return data


def test_shipped_local_profiles_load_and_pin_core_1():
    names = set(available_profiles())
    assert {"local-ort-1t", "local-ort-2t", "local-tvm-1t", "local-torch-1t"} <= names
    for name in ("local-ort-1t", "local-tvm-1t", "local-torch-1t"):
        p = load_profile(name)
        assert p.runtime.threads == 1 and p.runtime.cores == (1,)
        assert p.host.transport == "local" and p.host.resource == "host:local"
    assert load_profile("local-ort-2t").runtime.threads == 2
    kinds = {load_profile(n).runtime.kind for n in ("local-ort-1t", "local-tvm-1t", "local-torch-1t")}
    assert kinds == {"onnxruntime", "tvm", "torch"}


def test_loading_a_local_profile_does_not_import_paramiko():
    """Checking a profile's jump host imported harness.ssh_config, and with it paramiko (20 MiB), for every profile:
    planning a campaign of local devices (bench_scale) peaked at 144 MiB instead of 124."""
    import subprocess
    import sys

    code = ("import sys; from harness.profiles import load_profiles; "
            "load_profiles(['device_profiles/local-ort-1t.toml', 'device_profiles/local-tvm-1t.toml']); "
            "sys.exit('paramiko' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0


def test_good_profile_fields_and_round_trip():
    p = parse_profile(GOOD, source="pi-1.toml")
    assert p.batch_size == 8 and p.measurement == "standard" and p.cooldown_s == 1.0
    assert p.runtime.cores == (2, 3) and p.runtime.options_dict() == {"graph_optimization": "all"}
    assert dict(p.policy) == {"repeats": 3} and p.max_temp_c == 70.0
    assert p.lock_keys == ("pi-1.core.2", "pi-1.core.3", "pi-1.thermal.pi-1-soc")
    assert profile_from_dict(json.loads(p.to_json())) == p
    with pytest.raises(Exception):
        p.name = "other"  # frozen


@pytest.mark.parametrize("changes, words", [
    ({"device_class": "toaster"}, ["device_class", "toaster", "cpu, gpu, mobile, embedded_cpu, fpga, asic"]),
    ({"name": KeyError}, ["missing key 'name'"]),
    ({"colour": "red"}, ["unknown key 'colour'", "valid keys"]),
    ({"host__transport": "ssh"}, ["missing key 'host.address'"]),
    ({"host__transport": "command"}, ["transport 'command'", "'runtime.kind' must be 'command'"]),
    ({"host__key": "~/.ssh/id"}, ["host.key", "only applies to transport 'ssh'"]),
    ({"host__push": "adb push {model} x"}, ["host.push", "only applies to transport 'command'"]),
    ({"host__transport": "pigeon"}, ["host.transport", "pigeon", "local, ssh, command"]),
    ({"runtime__kind": "tensorrt"}, ["runtime.kind", "onnxruntime, tvm, torch, command"]),
    ({"runtime__threads": 0}, ["runtime.threads", ">= 1"]),
    ({"runtime__threads": 4}, ["runtime.threads", "exceeds"]),
    ({"runtime__cores": [1, 1]}, ["runtime.cores", "twice"]),
    ({"runtime__cores": "1"}, ["runtime.cores", "list"]),
    ({"runtime__options": {"spin": True}}, ["runtime.options.spin", "valid: provider"]),
    ({"runtime__options": {"graph_optimization": "max"}}, ["graph_optimization", "disable, basic"]),
    # nonsense counts the runtimes took without a word (onnxruntime ran with -3 inter-op threads and recorded it)
    ({"runtime__options": {"inter_op_threads": -3}}, ["runtime.options.inter_op_threads", ">= 1", "-3"]),
    ({"runtime__options": {"inter_op_threads": 0}}, ["runtime.options.inter_op_threads", ">= 1"]),
    ({"runtime__options": {"inter_op_threads": 2.0}}, ["runtime.options.inter_op_threads", "must be int"]),
    ({"runtime__kind": "command", "runtime__options": {"command": "bench {model}", "regex": "([0-9.]+)",
                                                      "warmup_runs": -1}}, ["runtime.options.warmup_runs", ">= 0"]),
    ({"runtime__kind": "tvm", "runtime__options": {"opt_level": -1}}, ["runtime.options.opt_level", "0, 1, 2, 3"]),
    # TVM's untuned build has no parallel loop: its records said 2 threads for one thread's latency
    ({"runtime__kind": "tvm", "runtime__options": {}}, ["runtime.threads", "= 2", "untuned runs on one thread",
                                                       "set threads = 1"]),
    # tuned = true with no libraries: every job was refused by the agent ('needs options.library') once a campaign ran
    ({"runtime__kind": "tvm", "runtime__options": {"tuned": True}},
     ["runtime.options.tuned", "needs 'runtime.options.library_dir'", "scripts/build_tvm_libraries"]),
    ({"runtime__kind": "tvm", "runtime__threads": 1, "runtime__options": {"library_dir": "libs"}},
     ["runtime.options.library_dir", "'libs'", "absolute path on the device"]),
    ({"runtime__kind": "tvm", "runtime__options": {"schedule": "ms-sample"}},
     ["runtime.options.schedule", "needs the device's core count", "num-cores"]),
    ({"runtime__kind": "tvm", "runtime__options": {"schedule": "dlight", "tuned": True, "library_dir": "/libs"}},
     ["runtime.options.schedule", "applies to the agent's own build"]),
    ({"runtime__kind": "tvm", "runtime__options": {"schedule": "fast"}}, ["runtime.options.schedule", "ms-sample"]),
    ({"runtime__options": {"scope": "host"}}, ["runtime.options.scope", "compute, end_to_end"]),
    ({"runtime__kind": "torch", "runtime__options": {"cuda_graph": "yes"}}, ["runtime.options.cuda_graph", "bool"]),
    # else every job of the device is refused by the agent (the device quarantined) only once a campaign runs
    ({"runtime__kind": "torch", "runtime__options": {"cuda_graph": True}}, ["runtime.options.cuda_graph", "device"]),
    ({"runtime__kind": "torch", "runtime__options": {"cuda_graph": True, "device": "cuda", "scope": "end_to_end"}},
     ["runtime.options.cuda_graph", "scope = \"compute\""]),
    ({"workload__batch_size": "8"}, ["workload.batch_size", "integer"]),
    ({"workload__dataset": "mnist"}, ["workload.dataset", "cifar10"]),
    ({"measurement__profile": "slow"}, ["measurement.profile", "quick, standard"]),
    ({"measurement__cooldown_s": -1}, ["measurement.cooldown_s", ">= 0"]),
    ({"measurement__policy": {"repeatz": 3}}, ["measurement.policy.repeatz", "repeats"]),
    ({"measurement__policy": {"repeats": 1.5}}, ["[measurement.policy]", "'repeats' must be a whole number"]),
    ({"measurement__policy": {"model_timeout_s": 0}}, ["[measurement.policy]", "model_timeout_s > 0"]),
    ({"host": "local"}, ["'host' must be a table"]),
    # TOML's nan and inf: each reached the agent's request, which JSON cannot carry, and killed the device's actor
    ({"measurement__cooldown_s": float("nan")}, ["measurement.cooldown_s", "finite number", "nan"]),
    ({"measurement__cooldown_s": float("inf")}, ["measurement.cooldown_s", "finite number", "inf"]),
    ({"measurement__max_temp_c": float("nan")}, ["measurement.max_temp_c", "finite number"]),
    ({"measurement__policy": {"window_timeout_s": float("inf")}}, ["measurement.policy.window_timeout_s", "finite"]),
    # finite but huge: the agent would sleep for decades before each model
    ({"measurement__cooldown_s": 1e9}, ["measurement.cooldown_s", "must be at most 300, got 1000000000.0"]),
    ({"measurement__policy": {"cooldown_s": 1e9}}, ["[measurement.policy]", "'cooldown_s' must be at most 300 s"]),
])
def test_bad_profiles_name_file_key_and_choices(changes, words):
    with pytest.raises(ProfileError) as err:
        parse_profile(_bad(**changes), source="lab/pi-1.toml")
    msg = str(err.value)
    assert msg.startswith("lab/pi-1.toml: ")
    for word in words:
        assert word in msg


def test_tuned_tvm_libraries_from_a_folder_may_run_on_more_threads():
    options = {"tuned": True, "library_dir": "/home/pi/tvm-libs"}
    p = parse_profile(_bad(runtime__kind="tvm", runtime__options=options))
    assert p.runtime.threads == 2 and p.runtime.options_dict() == options


def test_a_tvm_build_with_parallel_loops_may_run_on_more_threads():
    tvm_vm = pytest.importorskip("agents.runtimes.tvm_vm")
    from harness.profiles import RUNTIME_OPTIONS
    assert RUNTIME_OPTIONS["tvm"]["schedule"][1] == tvm_vm.SCHEDULES
    options = {"schedule": "ms-sample", "target": '{"kind": "llvm", "num-cores": 2}'}
    p = parse_profile(_bad(runtime__kind="tvm", runtime__options=options))
    assert p.runtime.threads == 2 and p.runtime.options_dict() == options


def test_every_agent_option_a_profile_may_set_is_known_to_profiles():
    # rule 14's end-to-end scope was an agent option no profile could set ("not an option of runtime")
    from agents.runtimes import command, ort, torch_eager, tvm_vm
    from harness.profiles import RUNTIME_OPTIONS
    set_by_the_harness = {"tvm": {"library", "library_sha256", "cc"}}  # a compiled library, its hash and compiler
    for kind, adapter in (("onnxruntime", ort), ("torch", torch_eager), ("tvm", tvm_vm), ("command", command)):
        assert set(RUNTIME_OPTIONS[kind]) == adapter.KNOWN_OPTIONS - set_by_the_harness.get(kind, set()), kind
    for kind, options in (("onnxruntime", {"provider": "cuda", "scope": "end_to_end"}),
                          ("torch", {"device": "cuda", "scope": "compute", "cuda_graph": True})):
        p = parse_profile(_bad(runtime__kind=kind, runtime__options=options))
        assert p.runtime.options_dict() == options


def test_command_runtime_needs_command_and_one_parser():
    data = _bad(runtime__kind="command", runtime__options={"command": "bench {model}"})
    with pytest.raises(ProfileError, match="exactly one of"):
        parse_profile(data)
    data["runtime"]["options"]["regex"] = "("
    with pytest.raises(ProfileError, match=r"key 'runtime.options.regex' = '\(' does not compile"):
        parse_profile(data)
    data["runtime"]["options"]["regex"] = r"([0-9.]+) ms"
    assert parse_profile(data).runtime.kind == "command"


def test_load_by_name_path_and_errors(tmp_path, monkeypatch):
    with pytest.raises(ProfileError, match="unknown device 'nope'.*known devices: .*local-ort-1t"):
        load_profile("nope")
    bad = tmp_path / "broken.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(ProfileError, match="broken.toml: not valid TOML"):
        load_profile(str(bad))
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(str(tmp_path / "missing.toml"))
    # the user directory is searched after the shipped one, by name
    monkeypatch.setenv("HWL_PROFILE_DIR", str(tmp_path))
    (tmp_path / "mine.toml").write_text('name = "mine"\ndevice_class = "cpu"\n[runtime]\nkind = "torch"\n')
    assert load_profile("mine").runtime.kind == "torch"
    (tmp_path / "other.toml").write_text('name = "different"\ndevice_class = "cpu"\n[runtime]\nkind = "torch"\n')
    with pytest.raises(ProfileError, match="make them agree"):
        load_profile("other")
    with pytest.raises(ProfileError, match="named twice"):
        load_profiles("mine,mine")
    assert [p.name for p in load_profiles("local-ort-1t, mine")] == ["local-ort-1t", "mine"]


SSH = {"name": "pi-2", "device_class": "embedded_cpu",
       "host": {"name": "pi-2", "transport": "ssh", "address": "198.18.0.2", "user": "pi", "key": "~/.ssh/lab",
                "machine": "aarch64", "wheel_dir": "wheels/aarch64"},
       "runtime": {"kind": "onnxruntime", "threads": 4}}


def test_ssh_profile_fields_defaults_and_round_trip():
    p = parse_profile(SSH, source="pi-2.toml")
    assert (p.host.transport, p.host.port, p.host.python, p.host.agent_dir) == ("ssh", 22, "python3", "~/.hwl")
    assert p.host.use_venv and p.host.cache_quota_mb == 2048 and p.host.machine == "aarch64"
    assert profile_from_dict(json.loads(p.to_json())) == p
    moved = parse_profile({**SSH, "host": {**SSH["host"], "address": "198.18.0.9", "port": 2222},
                           "description": "moved to the other bench"}, source="pi-2-moved.toml")
    assert moved.identity() == p.identity() and moved != p  # the same device, reached elsewhere
    assert p.reach_changes(moved) == {"host.address": ("198.18.0.2", "198.18.0.9"), "host.port": (22, 2222)}
    assert p.with_reach_of(moved) == moved and p.with_reach_of(moved).source == "pi-2-moved.toml"
    for other in ({"runtime": {**SSH["runtime"], "threads": 2}}, {"host": {**SSH["host"], "wheel_dir": "w2"}}):
        assert parse_profile({**SSH, **other}).identity() != p.identity()  # what is measured changed
    cycled = parse_profile({**SSH, "host": {**SSH["host"], "recover": "uhubctl -l 1-1 -p 2 -a cycle"}})
    assert cycled.host.recover == "uhubctl -l 1-1 -p 2 -a cycle" and cycled.identity() == p.identity()
    assert cycled.agent_policy() == {"cooldown_s": 0.2}
    hot = parse_profile({**SSH, "measurement": {"max_temp_c": 70, "policy": {"repeats": 3}}})
    assert hot.agent_policy() == {"cooldown_s": 0.2, "max_temp_c": 70.0, "repeats": 3}  # the agent gates on it
    phone = {**SSH, "host": {"name": "ph", "transport": "command"}, "runtime": {"kind": "command",
             "options": {"command": "x", "regex": "(.*)"}}, "measurement": {"max_temp_c": 70}}
    with pytest.raises(ProfileError, match="'measurement.max_temp_c' needs the agent on the device"):
        parse_profile(phone, source="ph.toml")
    for bad, why in (("sh -c 'unclosed", "is not a command line"), ("  ", "is empty")):
        with pytest.raises(ProfileError, match=f"pi-2.toml: key 'host.recover' {why}"):
            parse_profile({**SSH, "host": {**SSH["host"], "recover": bad}}, source="pi-2.toml")
    for missing in ("address", "user", "key"):
        data = json.loads(json.dumps(SSH))
        del data["host"][missing]
        with pytest.raises(ProfileError, match=f"missing key 'host.{missing}'"):
            parse_profile(data, source="pi-2.toml")
    data = json.loads(json.dumps(SSH))
    data["host"]["port"] = 70000
    with pytest.raises(ProfileError, match="TCP port"):
        parse_profile(data)


def test_command_transport_profile():
    data = {"name": "phone", "device_class": "mobile",
            "host": {"name": "lab-pc", "transport": "command",
                     "push": "adb push {model} /data/local/tmp/{sha256}.onnx"},
            "runtime": {"kind": "command",
                        "options": {"command": "adb shell bench {sha256}", "regex": "avg=([0-9.]+)"}}}
    p = parse_profile(data)
    assert p.host.push.startswith("adb push") and p.host.check is None


def test_example_profiles_parse_and_are_not_listed_as_devices():
    from pathlib import Path
    folder = Path(__file__).resolve().parents[1] / "device_profiles" / "examples"
    files = sorted(folder.glob("*.toml"))
    assert {f.stem for f in files} >= {"raspi4", "raspi4-tvm", "pixel7-adb", "fpga-vendor", "gpu-server-cuda"}
    transports = {load_profile(str(f)).host.transport for f in files}
    assert transports == {"ssh", "command", "local"}
    assert not set(available_profiles()) & {load_profile(str(f)).name for f in files}


def test_example_tvm_target_is_one_tvm_accepts():
    tvm = pytest.importorskip("tvm")
    from pathlib import Path
    p = load_profile(str(Path(__file__).resolve().parents[1] / "device_profiles" / "examples" / "raspi4-tvm.toml"))
    target = tvm.target.Target(p.runtime.options_dict()["target"])
    assert target.attrs["mtriple"] == "aarch64-linux-gnu"


@pytest.mark.parametrize("address, said", [
    ("pi@192.168.1.42", 'holds a user: write user = "pi" and address = "192.168.1.42"'),
    ("192.168.1.42:2222", 'holds a port: write address = "192.168.1.42" and port = 2222'),
    ("[fe80::1]:2222", 'holds a port: write address = "fe80::1" and port = 2222'),
    ("ssh://192.168.1.42", "is a URL: give the host name or IP alone ('host.user' and 'host.port' are keys of their "
                           "own)"),
])
def test_an_ssh_address_spelled_as_ssh_takes_it_is_refused_saying_how_to_write_it(tmp_path, capsys, address, said):
    # README's `hwl profile new pi-1 --transport ssh --host 192.168.1.42 ...` given ssh's pi@host or host:port was
    # written, and the first deploy said 'cannot reach pi-1 at pi@192.168.1.42:22 (... Name or service not known)'
    from harness.cli import main

    out = tmp_path / "pi-1.toml"
    assert main(["profile", "new", "pi-1", "--transport", "ssh", "--host", address, "--user", "pi", "--key",
                 "~/.ssh/hwl_lab", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"hwl profile: error: {out}: key 'host.address' = {address!r} {said}\n"
    assert not out.exists()
    assert parse_profile({**GOOD, "host": {"name": "pi-1", "transport": "ssh", "address": "fe80::1", "user": "pi",
                                           "key": "k"}}).host.address == "fe80::1"


def test_profile_new_writes_a_profile_hwl_reads_and_refuses_bad_flags(tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "lab" / "pi9.toml"
    ssh = ["profile", "new", "pi9", "--transport", "ssh", "--host", "198.18.0.9", "--user", "pi", "--key", "~/.ssh/k"]
    assert main([*ssh, "--threads", "2", "--cores", "2,3", "--out", str(out)]) == 0
    p = load_profile(str(out))
    assert (p.host.address, p.host.user, p.runtime.threads, p.runtime.cores) == ("198.18.0.9", "pi", 2, (2, 3))
    for argv, message in (([*ssh, "--out", str(out)], "exists; pass --force"),
                          ([*ssh, "--cores", "0,1,x", "--out", str(tmp_path / "b.toml")],
                           "--cores '0,1,x': give core numbers separated by commas"),
                          ([*ssh, "--out", str(out / "x.toml")], f"cannot write {out / 'x.toml'}"),
                          (["profile", "new", "here", "--host", "198.18.0.9", "--port", "2222", "--out",
                            str(tmp_path / "c.toml")], "--host, --port are for --transport ssh, not local"),
                          ([*ssh, "--regex", "ms", "--out", str(tmp_path / "c.toml")],
                           "--regex is for --transport command, not ssh"),
                          # --port 0 wrote port = 22, silently
                          ([*ssh, "--port", "0", "--out", str(tmp_path / "d.toml")],
                           "key 'host.port' must be >= 1, got 0")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert load_profile(str(out)) == p  # the refused commands left it alone
    assert not (tmp_path / "d.toml").exists()


def test_profile_new_keeps_a_relative_key_path_as_the_file_it_named(tmp_path, monkeypatch):
    # written as given, the key was looked up in the folder of each later command: `hwl deploy pi9` run anywhere
    # else said 'key file keys/lab for pi9 does not exist'
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    ssh = ["profile", "new", "pi9", "--transport", "ssh", "--host", "198.18.0.9", "--user", "pi"]
    assert main([*ssh, "--key", "keys/lab", "--out", "pi9.toml"]) == 0
    assert load_profile(str(tmp_path / "pi9.toml")).host.key == str(tmp_path / "keys" / "lab")
    assert main([*ssh, "--key", "~/.ssh/lab", "--out", "pi9.toml", "--force"]) == 0  # as given: the home of any user
    assert load_profile(str(tmp_path / "pi9.toml")).host.key == "~/.ssh/lab"


@pytest.mark.parametrize("key, template, typo", [
    ("host.push", "adb push {modle} /data/local/tmp/hwl/{sha256}.onnx", "modle"),
    ("host.check", "adb shell test -f /data/local/tmp/hwl/{sha}.onnx", "sha"),
    ("runtime.options.command", "adb shell bench --graph /data/local/tmp/hwl/{sha256}.onnx --threads {thread}",
     "thread"),
])
def test_a_template_naming_an_unknown_placeholder_is_refused_at_load(tmp_path, key, template, typo):
    """A typo in a command template ({modle}) loaded fine and reached the tool as written: every job failed
    (runtime_error charged to its architecture, or a push lost as the device's). It is refused at load, naming
    the file, the key, the unknown placeholder and the known ones."""
    commands = {"host.push": "adb push {model} /data/local/tmp/hwl/{sha256}.onnx", "host.check": "true",
                "runtime.options.command": "adb shell bench {sha256}", key: template}
    path = tmp_path / "phone.toml"
    path.write_text("\n".join([
        'name = "phone"', 'device_class = "mobile"', "[host]", 'transport = "command"',
        f"push = {json.dumps(commands['host.push'])}", f"check = {json.dumps(commands['host.check'])}",
        "[runtime]", 'kind = "command"', "[runtime.options]",
        f"command = {json.dumps(commands['runtime.options.command'])}", 'regex = "([0-9.]+) ms"']) + "\n")
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    known = "{model}, {sha256}" + (", {threads}, {cores}, {batch}" if key.startswith("runtime") else "")
    assert str(err.value).startswith(f"{path}: key '{key}' names unknown placeholder(s) {{{typo}}}; known: {known} ")


def test_braces_that_are_no_placeholder_pass_and_every_known_placeholder_is_filled(tmp_path):
    """Code (a dict, a shell's ${HOME}, '{ x }' with spaces) keeps its braces and loads; each placeholder the
    profile check knows is one the agent fills in (it leaves any other braces as written)."""
    from agents.protocol import Measure
    from agents.runtimes.command import prepare
    from agents.verified import VerifiedFile
    from harness.profiles import TEMPLATE_PLACEHOLDERS

    command = """sh -c 'echo ${HOME} >&2; python3 -c "print({"a": 1}, f\\"{ 2 }\\")"; echo 2.5 ms'"""
    p = parse_profile(_bad(runtime__kind="command", runtime__options={"command": command, "regex": "([0-9.]+) ms"}))
    assert p.runtime.options_dict()["command"] == command
    every = " ".join("{" + name + "}" for name in TEMPLATE_PLACEHOLDERS["runtime.options.command"])
    request = Measure(runtime="command", model="m.onnx", sha256="ab" * 32, threads=2, cores=(2, 3), batch=4,
                      profile="quick", options={"command": f"bench {every}", "regex": "([0-9.]+)"})
    prepared = prepare(request, VerifiedFile(Path("m.onnx"), b"checked bytes"))
    argv = prepared.metadata["argv"]
    assert argv[:1] + argv[2:] == ["bench", "ab" * 32, "2", "2,3", "4"]
    assert Path(argv[1]).name == "m.onnx" and Path(argv[1]).read_bytes() == b"checked bytes"  # a private copy
    prepared.close()


@pytest.mark.parametrize("key, template", [
    ("push", """sh -c 'cp "{model}" /sdcard/{sha256}.onnx'"""),
    ("check", """bash -o pipefail -ec "test -s '{model}'" """),
])
def test_a_model_path_quoted_in_a_shell_script_is_refused_at_load(key, template):
    """{model} in a shell's script is filled shell-quoted (agents.command_template), so quotes around it would
    become part of the path: such a template is refused at load, saying how to write it, not at every job."""
    data = {"name": "phone", "device_class": "mobile", "host": {"transport": "command", key: template},
            "runtime": {"kind": "command", "options": {"command": "bench {sha256}", "regex": "([0-9.]+)"}}}
    with pytest.raises(ProfileError, match=f"^lab/phone.toml: key 'host.{key}': command template: {{model}} stands "
                                           "inside quotes in the shell script .* write it without the quotes"):
        parse_profile(data, source="lab/phone.toml")
    data["host"][key] = """sh -c 'cp {model} /sdcard/{sha256}.onnx && test "$(cat /sdcard/{sha256})" = {sha256}'"""
    assert parse_profile(data, source="lab/phone.toml").host_commands()[f"host.{key}"] == data["host"][key]


@pytest.mark.parametrize("key", ["push", "check"])
def test_a_push_or_check_that_is_no_command_line_is_refused_at_load(key):
    """An unbalanced quote in a push or check template loaded, and shlex failed on it at the first model."""
    data = {"name": "phone", "device_class": "mobile", "host": {"transport": "command", key: "adb push '{model} x"},
            "runtime": {"kind": "command", "options": {"command": "bench {sha256}", "regex": "([0-9.]+)"}}}
    with pytest.raises(ProfileError, match=f"^lab/phone.toml: key 'host.{key}' is not a command line"):
        parse_profile(data, source="lab/phone.toml")


def test_profile_new_names_the_file_in_a_folder_hwl_searches_as_the_profile(tmp_path, monkeypatch, capsys):
    """`profile new pi-1 --out <profile folder>/pi-2.toml` wrote a profile that `profile show pi-1` did not find
    and `profile show pi-2` refused, its key 'name' not being its file's."""
    from harness.cli import main

    monkeypatch.setenv("HWL_PROFILE_DIR", str(tmp_path))
    assert main(["profile", "new", "pi-1", "--out", str(tmp_path / "pi-2.toml")]) == 2
    assert capsys.readouterr().err == (f"hwl profile: error: {tmp_path / 'pi-2.toml'}: hwl finds the profiles of "
                                       f"{tmp_path} by their file name, so profile 'pi-1' goes in "
                                       f"{tmp_path / 'pi-1.toml'}\n")
    assert not (tmp_path / "pi-2.toml").exists()
    assert main(["profile", "new", "pi-1", "--out", str(tmp_path / "pi-1.toml")]) == 0
    assert load_profile("pi-1").name == "pi-1"
    assert main(["profile", "new", "pi-3", "--out", str(tmp_path / "elsewhere" / "lab.toml")]) == 0  # by path only


def test_a_profile_saved_with_a_byte_order_mark_is_read(tmp_path):
    """A profile saved by an editor that starts UTF-8 with a byte-order mark (Windows' Notepad) was refused as
    'not valid TOML: Invalid statement (at line 1, column 1)', a line that looks right."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbfname = "bom"\ndevice_class = "cpu"\n[runtime]\nkind = "onnxruntime"\n')
    assert load_profile(str(path)).name == "bom"


@pytest.mark.parametrize("flags, message", [
    (["--regex", "t=([0-9.]+)", "--json-path", "results.latency_ms"],
     "a command device needs --command and one of --regex / --json-path (not both)"),
    (["--regex", "t=([0-9.]+)", "--runtime", "tvm"],
     "--runtime tvm runs in hwl's agent on the device; --transport command times the device's own tool (--command), so "
     "its runtime is command"),
])
def test_profile_new_refuses_a_command_flag_it_would_drop(tmp_path, flags, message, capsys):
    """`--regex` with `--json-path` wrote the regex alone, and `--runtime tvm` with `--transport command` wrote
    kind = "command": both exited 0 with a profile other than the one asked for."""
    from harness.cli import main

    out = tmp_path / "ph.toml"
    argv = ["profile", "new", "ph", "--transport", "command", "--run", "adb shell bench {sha256}", *flags]
    assert main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"hwl profile: error: {message}\n" and not out.exists()


def test_profile_new_writes_a_command_devices_check(tmp_path, capsys):
    """`hwl profile new` of a command device had --push but no --check: the template that sees whether the phone
    holds a whole copy of a model had to be added to the file by hand. A local device refuses it, as --push."""
    from harness.cli import main

    check = "adb shell 'test \"$(sha256sum /data/local/tmp/{sha256}.onnx | cut -c1-64)\" = {sha256}'"
    argv = ["profile", "new", "ph", "--transport", "command", "--run", "adb shell bench {sha256}", "--regex",
            "([0-9.]+) ms", "--push", "adb push {model} /data/local/tmp/{sha256}.onnx", "--check", check]
    assert main([*argv, "--out", str(tmp_path / "ph.toml")]) == 0
    assert load_profile(str(tmp_path / "ph.toml")).host.check == check
    assert main(["profile", "new", "here", "--check", check, "--out", str(tmp_path / "here.toml")]) == 2
    assert capsys.readouterr().err.endswith("hwl profile: error: --check is for --transport command, not local\n")


def test_profile_new_into_a_folder_does_not_ask_for_force(tmp_path, capsys):
    """`--out FOLDER` said 'FOLDER exists; pass --force to overwrite it', and with --force 'is a directory'."""
    from harness.cli import main

    assert main(["profile", "new", "x", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"hwl profile: error: {tmp_path} is a directory; give a file name to write\n"


@pytest.mark.parametrize("given, fixed", [("pi-1", "pi-1.toml"), ("pi-1.TOML", "pi-1.toml"), ("pi.v2", "pi.v2.toml")])
def test_profile_new_refuses_an_out_file_hwl_would_not_find_as_a_profile(tmp_path, monkeypatch, capsys, given, fixed):
    """`--out ~/.config/hwl/profiles/pi-1` (no .toml) was written, then `hwl deploy pi-1` said 'unknown device': the
    folder's profiles are its *.toml files, and a name without .toml (or a /) is taken for a profile's name."""
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["profile", "new", "pi-1", "--out", given]) == 2
    assert capsys.readouterr().err == (f"hwl profile: error: {given}: a profile file's name must end in .toml (hwl "
                                       f"finds no other as a profile): give --out {fixed}\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, example, device", [("raspi4", "raspi4", "raspi4"),
                                                  ("pixel7-adb", "pixel7-adb", "pixel7"),
                                                  ("pixel7", "pixel7-adb", "pixel7")])
def test_an_example_profiles_name_says_how_to_make_it_a_profile(tmp_path, monkeypatch, capsys, name, example, device):
    """README points to device_profiles/examples/; `hwl deploy raspi4` said 'unknown device', listing the local-*
    profiles alone. The copy is named by the example's `name`, as hwl finds profiles (pixel7-adb.toml is 'pixel7')."""
    from harness.cli import main
    from harness.profiles import load_profile, shipped_dir

    monkeypatch.setenv("HWL_PROFILE_DIR", str(tmp_path))
    assert main(["profile", "show", name]) == 2
    copy = tmp_path / f"{device}.toml"
    assert capsys.readouterr().err.endswith(f" ({shipped_dir() / 'examples' / example}.toml is an example: copy it to "
                                            f"{copy} and edit it for your device)\n")
    copy.write_text((shipped_dir() / "examples" / f"{example}.toml").read_text())
    assert load_profile(device).name == device  # what the line says to do gives a profile hwl finds
    assert "is an example" not in str(pytest.raises(Exception, load_profile, "nope").value)


def test_status_all_shows_the_lab_beside_a_profile_it_cannot_read(tmp_path, monkeypatch, capsys):
    """One typo in one file of the profile folder ended `hwl status --all` in that file's error alone: no device of
    the lab was shown. Now that profile is a row that cannot measure (exit 1), its error under the table."""
    from harness.cli import main

    monkeypatch.setenv("HWL_PROFILE_DIR", str(tmp_path))
    write_profile(tmp_path, "dev-a")
    typo = write_profile(tmp_path, "dev-b")
    typo.write_text(typo.read_text().replace("threads = 1", "thread = 1"))
    said = f"{typo}: unknown key 'runtime.thread' at [runtime]; valid keys: kind, threads, cores, options"
    assert main(["status", "--all"]) == 1
    out = capsys.readouterr().out
    assert "│ dev-a " in out and "│ local-ort-1t " in out and "│ dev-b " in out and f"\ndev-b: {said}\n" in out, out
    assert "reachable -" not in out  # that line is of command devices
    assert main(["status", "--all", "--json"]) == 1
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["dev-b"]["usable"], rows["dev-b"]["error"]) == (False, said) and rows["dev-a"]["usable"] is True
    assert main(["status", "dev-b"]) == 2  # named alone, it is refused as before
    assert capsys.readouterr().err == f"hwl status: error: {said}\n"


def test_hidden_files_in_a_profile_folder_are_not_profiles(tmp_path, monkeypatch, capsys):
    """A `hwl profile new` killed mid-write leaves its partial file (`.partial-...-pi-2.toml`) in the profile
    folder, and an editor its lock (`.#pi-1.toml`, a link to nowhere): both were listed as profiles, and
    `hwl deploy --all` / `hwl status --all` failed reading them."""
    from harness.cli import main

    monkeypatch.setenv("HWL_PROFILE_DIR", str(tmp_path))
    assert main(["profile", "new", "pi-1", "--out", str(tmp_path / "pi-1.toml")]) == 0
    (tmp_path / ".partial-lab-pc-4242-0123abcd-pi-2.toml").write_text('name = "pi-2"\ndevice_cl')
    (tmp_path / ".#pi-1.toml").symlink_to("user@lab-pc.4242:1700000000")
    capsys.readouterr()
    assert main(["profile", "list"]) == 0
    listed = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert "pi-1" in listed and not [name for name in listed if name.startswith(".")]
    assert load_profile("pi-1").name == "pi-1"
    assert main(["status", "--all"]) == 0  # it was 2: "device profile file .../.#pi-1.toml does not exist"
    said = capsys.readouterr()
    assert "pi-1" in said.out and not said.err


@pytest.mark.parametrize("jump, said", [
    ("gw:ssh", "= 'gw:ssh' has port 'ssh': give a number"),
    ("@gw", "= '@gw' has an empty user before '@'"),
    ("gw:70000", "= 'gw:70000' has port 70000: a TCP port is 1..65535"),
    ("gw1,", "= '' is not [user@]host[:port]"),
    ([], 'must be a string "[user@]host[:port]" or a list of them, got []'),
    (3, 'must be a string "[user@]host[:port]" or a list of them, got 3'),
])
def test_a_jump_host_spelled_wrong_is_refused_in_one_line_naming_the_key(jump, said):
    ssh = {"name": "pi-1", "transport": "ssh", "address": "10.0.0.12", "user": "pi", "key": "k", "jump": jump}
    with pytest.raises(ProfileError) as refused:
        parse_profile({**GOOD, "host": ssh})
    assert str(refused.value) == f"<profile>: key 'host.jump' {said}"


def test_jump_hosts_are_read_as_ssh_writes_them_and_chained_in_order():
    from harness.remote.connect import host_for

    ssh = {"name": "pi-1", "transport": "ssh", "address": "10.0.0.12", "user": "pi", "key": "k"}
    profile = parse_profile({**GOOD, "host": {**ssh, "jump": ["me@gw1", "[fe80::1]:2200"]}})
    assert profile.host.jump == "me@gw1,[fe80::1]:2200"
    device = host_for(profile)
    last, first = device.jump, device.jump.jump
    assert (first.user, first.address, first.port, first.jump) == ("me", "gw1", 22, None)
    assert (last.address, last.port, last.name) == ("fe80::1", 2200, "pi-1's jump host fe80::1")
    assert profile_from_dict(json.loads(profile.to_json())) == profile  # kept with a campaign as it was
    with pytest.raises(ProfileError, match="key 'host.jump' only applies to transport 'ssh'"):
        parse_profile({**GOOD, "host": {"name": "pi-1", "jump": "gw"}})


def _ssh_config(home: Path, monkeypatch, text: str) -> Path:
    """``text`` as the ~/.ssh/config of a user whose home is ``home``."""
    monkeypatch.setenv("HOME", str(home))
    (home / ".ssh").mkdir()
    config = home / ".ssh" / "config"
    config.write_text(text)
    return config


def _refused_in_one_line(host: dict) -> str:
    with pytest.raises(ProfileError) as refused:
        parse_profile({**GOOD, "host": host})
    assert "\n" not in str(refused.value)
    return str(refused.value)


def test_a_host_alias_of_the_users_ssh_config_fills_what_the_profile_leaves_out(tmp_path, monkeypatch):
    config = _ssh_config(tmp_path, monkeypatch, "Host pi-*\n  User pi\n  IdentityFile ~/.ssh/lab_key\n"
                                                "  ProxyJump me@gw:2200\n"
                                                "Host pi-12\n  HostName 10.0.0.12\n  Port 2222\n"
                                                "Host old-pi\n  ProxyCommand nc -X 5 -x socks:1080 %h %p\n"
                                                "Host pi-n\n  HostName 10.0.0.%n\n")
    ssh = {"name": "pi-1", "transport": "ssh"}
    host = parse_profile({**GOOD, "host": {**ssh, "address": "pi-12"}}).host
    assert (host.address, host.port, host.user, host.key, host.jump) == (
        "10.0.0.12", 2222, "pi", f"{tmp_path}/.ssh/lab_key", "me@gw:2200")
    given = {**ssh, "address": "pi-12", "port": 22, "user": "root", "key": "k", "jump": "gw2"}
    host = parse_profile({**GOOD, "host": given}).host  # the profile wins
    assert (host.address, host.port, host.user, host.key, host.jump) == ("10.0.0.12", 22, "root", "k", "gw2")
    for address, said in (
            ("old-pi", f"{config} reaches 'old-pi' through a ProxyCommand, which hwl does not run; give the "
                       "profile's [host] a jump (or the config a ProxyJump)"),
            ("other", f"missing key 'host.user' (and {config} gives 'other' no User)"),
            ("pi-n", f"{config}: HostName '10.0.0.%n' for host 'pi-n' holds a %-token, which hwl does not expand")):
        assert said in _refused_in_one_line({**ssh, "address": address})
    config.write_text("Host pi-12\n  Port\n")
    with pytest.raises(ProfileError, match=rf"^{config}: cannot read it for host 'pi-12' \(ConfigParseError"):
        parse_profile({**GOOD, "host": {**ssh, "address": "pi-12"}})


def test_a_jump_host_alias_is_read_by_the_devices_rules_when_the_profile_loads(tmp_path, monkeypatch):
    config = _ssh_config(tmp_path, monkeypatch, "Host gw\n  HostName 10.0.0.1\n  Port 2200\n  User me\n"
                                                "Host socks-gw\n  ProxyCommand nc -X 5 -x socks:1080 %h %p\n"
                                                "Host gw-n\n  HostName 10.0.0.%n\n")
    ssh = {"name": "pi-1", "transport": "ssh", "address": "10.0.0.12", "user": "pi", "key": "k"}
    for jump, said in (
            ("socks-gw", f"{config} reaches jump host 'socks-gw' through a ProxyCommand, which hwl does not run"),
            ("gw-n", f"{config}: HostName '10.0.0.%n' for host 'gw-n' holds a %-token, which hwl does not expand")):
        assert said in _refused_in_one_line({**ssh, "jump": jump})  # it loaded: reached directly, or refused later
    # behind another gateway, ssh -J goes through the hops before it, whatever the config says of its own proxy
    assert parse_profile({**GOOD, "host": {**ssh, "jump": "gw,socks-gw"}}).host.jump == "gw,socks-gw"


def test_a_proxy_jump_of_the_config_that_comes_back_round_is_refused_in_one_line_naming_the_config(tmp_path,
                                                                                                     monkeypatch):
    config = _ssh_config(tmp_path, monkeypatch, "Host a\n  ProxyJump me@b:2200\nHost b\n  ProxyJump a,c\n"
                                                "Host self\n  ProxyJump self\nHost pi-*\n  ProxyJump b\n"
                                                "Host bad\n  ProxyJump gw:ssh\n")
    ssh = {"name": "pi-1", "transport": "ssh", "address": "10.0.0.12", "user": "pi", "key": "k"}
    loop = f"{config}: ProxyJump goes round in a loop"
    assert _refused_in_one_line({**ssh, "jump": "a"}).startswith(f"{loop} (a -> b -> a); ")
    assert _refused_in_one_line({**ssh, "jump": "self"}).startswith(f"{loop} (self -> self); ")
    assert _refused_in_one_line({**ssh, "address": "pi-b"}).startswith(f"{loop} (b -> a -> b)")
    # behind another hop, a's own ProxyJump is not followed (ssh -J reaches it through c), so no loop
    assert parse_profile({**GOOD, "host": {**ssh, "jump": "c,a"}}).host.jump == "c,a"
    assert _refused_in_one_line({**ssh, "jump": "bad"}) == (f"{config}: ProxyJump 'gw:ssh' for host 'bad' has "
                                                            "port 'ssh': give a number")
    config.write_text("Host pi-*\n  ProxyJump gw\nHost gw\n  ProxyJump pi-9\n")
    assert _refused_in_one_line({**ssh, "address": "pi-9"}).startswith(f"{loop} (pi-9 -> gw -> pi-9)")


def test_profile_new_writes_a_jump_host_and_refuses_one_spelled_wrong(tmp_path, capsys):
    from harness.cli import main

    ssh = ["profile", "new", "pi-1", "--transport", "ssh", "--host", "10.0.0.12", "--user", "pi", "--key", "~/.ssh/k"]
    out = tmp_path / "pi-1.toml"
    assert main([*ssh, "--jump", "me@gw.lab:2200", "--out", str(out)]) == 0
    assert load_profile(str(out)).host.jump == "me@gw.lab:2200"
    bad = tmp_path / "bad.toml"
    assert main([*ssh, "--jump", "me@gw.lab:ssh", "--out", str(bad)]) == 2
    assert capsys.readouterr().err.endswith(f"{bad}: key 'host.jump' = 'me@gw.lab:ssh' has port 'ssh': give a number\n")
    assert not bad.exists()


def test_profile_new_leaves_to_the_users_ssh_config_what_it_gives_a_host_alias(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    config = _ssh_config(tmp_path, monkeypatch, "Host pi-12\n  HostName 10.0.0.12\n  Port 2222\n  User pi\n"
                                                "  IdentityFile ~/.ssh/lab_key\nHost bare\n  HostName 10.0.0.13\n")
    new = ["profile", "new", "pi-1", "--transport", "ssh"]
    out = tmp_path / "pi-1.toml"
    assert main([*new, "--host", "pi-12", "--out", str(out)]) == 0  # it was: needs --user, --key
    assert not [line for line in out.read_text().splitlines() if line.split(" = ")[0] in ("port", "user", "key")]
    host = load_profile(str(out)).host
    assert (host.address, host.port, host.user, host.key) == ("10.0.0.12", 2222, "pi", f"{tmp_path}/.ssh/lab_key")
    assert main([*new, "--host", "pi-12", "--port", "2200", "--user", "root", "--out", str(out), "--force"]) == 0
    host = load_profile(str(out)).host  # the flags win, and are written
    assert (host.port, host.user, host.key) == (2200, "root", f"{tmp_path}/.ssh/lab_key")
    assert main([*new, "--host", "10.0.0.14", "--user", "pi", "--key", "k", "--out", str(out), "--force"]) == 0
    assert "port = 22\n" in out.read_text()  # no alias: as before
    capsys.readouterr()
    bad = tmp_path / "bare.toml"
    assert main([*new, "--host", "bare", "--user", "pi", "--out", str(bad)]) == 2
    assert capsys.readouterr().err == (f"hwl profile: error: transport ssh needs --key (and {config} gives 'bare' no "
                                       "IdentityFile)\n")
    assert main([*new, "--host", "bare", "--out", str(bad)]) == 2
    said = capsys.readouterr().err
    assert said.endswith(f"needs --user, --key (and {config} gives 'bare' no User or IdentityFile)\n")
    assert not bad.exists()
