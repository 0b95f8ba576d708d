"""`hwl measure`: one measurement through the agent's child-process path, printed as JSON or a table."""
import json
import os
import sys
from pathlib import Path

import pytest

from harness.cli import main

TINY = ["--policy", "warmup_min_s=0.01", "--policy", "repeats=2", "--policy", "window_min_s=0.02",
        "--policy", "window_min_runs=5", "--policy", "cooldown_s=0"]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    from harness.export import export_one
    return Path(export_one("nb201", 4321, tmp_path_factory.mktemp("models")).path)


def test_measure_json(onnx_path, capsys):
    rc = main(["measure", str(onnx_path), "--runtime", "ort", "--threads", "1", "--cores", "0",
               "--profile", "quick", "--json", *TINY])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["outcome"] in ("ok", "unstable")
    m = out["measurement"]
    assert m["spec"]["runtime"] == "onnxruntime" and m["spec"]["cores"] == [0] and m["spec"]["profile"] == "quick"
    assert m["stats"]["median_ms"] > 0 and len(m["samples_ns"]) == 2


def test_measure_table_for_a_command(capsys):
    rc = main(["measure", "--runtime", "command", "--command", f"{sys.executable} -c \"print('t=2.5')\"",
               "--regex", r"t=([0-9.]+)", "--profile", "quick", *TINY])
    out = capsys.readouterr().out
    assert rc == 0 and "2.5000 ms" in out and "label" in out
    assert "(command, 1 thread, cores any)" in out  # it said "1 thread(s)"
    assert "others on the cores" in out and "│ unknown: this runtime times" in out  # rule 7: unknown, not zero
    # the tool loads and feeds the model: its input and first inference are unknown here, not '[]' and 'nan ms'
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines() if line.count("│") == 3}
    assert rows["input (first), batch, dtype"].startswith("-, 1, ") and rows["init / first"].endswith(" / - ms")
    assert "nan" not in out


def test_measure_table_says_what_else_ran_on_the_cores(onnx_path, capsys):
    rc = main(["measure", str(onnx_path), "--cores", "0", "--profile", "quick", *TINY])
    out = capsys.readouterr().out
    assert rc == 0 and "others on the cores (worst window)" in out and "% (steal " in out


def test_measure_table_says_the_shape_that_ran_and_a_free_dimension_needs_one(tmp_path, capsys):
    """A model of your own with ids [N, seq]: without --input-shape it ran at seq 1 and the table did not say so."""
    import onnx
    from onnx import TensorProto, helper
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", "seq"]) for n in "xy")
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "seq", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "seq.onnx")
    assert main(["measure", str(tmp_path / "seq.onnx"), "--profile", "quick", *TINY]) == 2
    err = capsys.readouterr().err
    assert "free dimension seq (axis 1)" in err and "--input-shape 1,seq" in err and err.count("\n") == 1
    assert main(["measure", str(tmp_path / "seq.onnx"), "--input-shape", "2,32", "--batch", "2", "--profile", "quick",
                 *TINY]) == 0
    out = capsys.readouterr().out
    assert "input (first), batch, dtype" in out and "[2, 32], 2, float32" in out

def test_measure_failure_exit_status_and_user_errors(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    assert main(["measure", str(bad), "--profile", "quick", "--json", *TINY]) == 1
    assert json.loads(capsys.readouterr().out)["outcome"] == "load_error"
    assert main(["measure", str(tmp_path / "absent.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["measure", str(bad), "--policy", "repeat=2"]) == 2
    assert "unknown timing policy field" in capsys.readouterr().err
    assert main(["measure", str(bad), "--policy", "cooldown_s=1e400"]) == 2  # JSON's inf: an OverflowError traceback
    assert "'cooldown_s' must be a finite number >= 0, got inf" in capsys.readouterr().err
    assert main(["measure", "--runtime", "command", "--regex", "x"]) == 2
    assert "options.command" in capsys.readouterr().err


def test_a_cooldown_past_the_methods_limit_for_a_model_is_refused_naming_the_field(capsys):
    # 1e9 s passed (only inf and nan were refused): the agent would have slept for decades before the model
    from agents.errors import BadRequest
    from agents.timing import TimingPolicy

    assert main(["measure", "--runtime", "torch", "--arch", "nb201:1", "--policy", "cooldown_s=1e9"]) == 2
    assert capsys.readouterr().err == "hwl measure: error: timing policy field 'cooldown_s' must be at most 300 s " \
                                      "(a device that needs longer to cool sets max_temp_c), got 1000000000.0\n"
    with pytest.raises(BadRequest, match="'cooldown_s' must be at most 300 s"):  # a request that reaches the agent
        TimingPolicy.from_profile("quick", {"cooldown_s": 300.5})
    assert TimingPolicy.from_profile("quick", {"cooldown_s": 300}).cooldown_s == 300


def test_measure_says_what_a_runtime_needs_in_its_own_flags(onnx_path, capsys):
    # a dataset typo was a load_error record (exit 1), and a missing model or --arch was the agent's protocol
    # message ("needs 'model' (a path) or 'sha256'", "'arch' ({'space': ...} or {'factory': ...})")
    for argv, message in ((["--runtime", "torch", "--arch", "nb201:1:cifar1"],
                           "unknown dataset 'cifar1' for nb201; valid datasets: cifar10, cifar100, ImageNet16-120"),
                          (["--runtime", "torch"], "--runtime torch builds the network from --arch SPACE:KEY"),
                          ([str(onnx_path), "--runtime", "torch"], f"and takes no ONNX file; got {onnx_path}"),
                          (["--arch", "nb201:5"], "--runtime ort times an ONNX file: give it (hwl measure "
                                                  "MODEL.onnx ...); --arch is for --runtime torch"),
                          (["--runtime", "tvm"], "--runtime tvm times an ONNX file")):
        assert main(["measure", *argv, "--profile", "quick", *TINY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "sha256" not in err and "factory" not in err


def test_measure_refuses_more_threads_than_usable_cores_when_none_are_pinned(onnx_path, capsys):
    """`--threads` above this machine's usable cores with no `--cores` was timed oversubscribed."""
    usable = sorted(os.sched_getaffinity(0))
    assert main(["measure", str(onnx_path), "--threads", str(len(usable) + 1), "--profile", "quick", *TINY]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hwl measure: error: 'threads' = {len(usable) + 1} asks more threads than the {len(usable)} core(s) "
        f"usable here {usable}; ask for at most {len(usable)}, or pin cores")


def test_measure_waits_while_a_local_device_of_a_campaign_measures(onnx_path, tmp_path, monkeypatch, capsys):
    """Rule 7: `hwl measure` never times alongside a campaign's local device (its thermal domain lock)."""
    import threading
    import time

    from harness.device_worker import device_locks

    monkeypatch.setenv("HWL_LOCK_DIR", str(tmp_path))
    held, release = threading.Event(), threading.Event()

    def campaign_measures():
        with device_locks(["local.thermal.local-cpu"]):
            held.set()
            release.wait(10)

    threading.Thread(target=campaign_measures).start()
    held.wait(10)
    threading.Timer(2.0, release.set).start()
    start = time.monotonic()
    assert main(["measure", str(onnx_path), "--cores", "0", "--profile", "quick", "--json", *TINY]) == 0
    assert time.monotonic() - start >= 2.0


@pytest.mark.parametrize("argv, message", [
    (["--option", "provider=bogus"], "onnxruntime option provider='bogus'; valid: cpu, cuda"),
    (["--option", "bogus=1"], "unknown onnxruntime option(s) bogus"),
    (["--runtime", "command", "--command", "echo 1", "--regex", "(["], "command option regex '([' does not compile"),
])
def test_a_request_the_runtime_refuses_is_a_usage_error(onnx_path, argv, message, capsys):
    """An option the runtime refuses was printed as the model's load_error record ('BadRequest: ...') with exit
    status 1, as if the model had failed to load."""
    model = [] if "command" in argv else [str(onnx_path)]
    assert main(["measure", *model, *argv, "--profile", "quick", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "BadRequest" not in err


def test_a_batch_the_model_was_not_exported_at_is_refused(onnx_path, capsys):
    """--batch 8 on a batch-1 export timed batch 1 and wrote a record saying batch 8 (its input_shape [1, ...])."""
    assert main(["measure", str(onnx_path), "--batch", "8", "--profile", "quick", *TINY]) == 2
    assert ("the model's input 'input' has batch size 1, not the request's 8: ask for batch 1 (hwl measure --batch 1; "
            "a profile's batch_size = 1), or export the model at batch size 8") in capsys.readouterr().err
    assert main(["measure", str(onnx_path), "--batch", "1", "--profile", "quick", "--json", *TINY]) == 0
    assert json.loads(capsys.readouterr().out)["measurement"]["spec"]["batch"] == 1


def test_measure_tells_a_model_too_slow_for_its_policy_where_to_change_it(onnx_path, capsys):
    """The table view printed the message through rich's markup, which ate '[measurement.policy]' (the profile
    table a user must edit): '(the profile's ; hwl measure ...'."""
    rc = main(["measure", str(onnx_path), "--cores", "0", *TINY, "--policy", "window_min_runs=1000000",
               "--policy", "window_max_s=30", "--policy", "window_timeout_s=30", "--policy", "model_timeout_s=4"])
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert rc == 1 and out.startswith("timeout: TooSlowForPolicy: one inference takes"), out
    assert "(the profile's [measurement.policy]; hwl measure --policy FIELD=VALUE)" in out, out


def test_a_core_named_twice_is_refused_not_waited_on_for_ever(onnx_path, tmp_path):
    """`--cores 0,0` never returned: the measurement took its lock of core 0 twice, the second behind the first."""
    import subprocess
    argv = [sys.executable, "-m", "harness", "measure", str(onnx_path), "--cores", "0,0", "--profile", "quick", *TINY]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HWL_LOCK_DIR": str(tmp_path)})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "hwl measure: error: --cores '0,0' names 0 twice\n"


def test_torch_refuses_an_input_shape_whose_batch_is_not_the_batch_asked_for(capsys):
    """`--input-shape 2,3,32,32 --batch 5` timed batch 2 under a record saying batch 5 (onnxruntime's and TVM's
    models were refused so already)."""
    argv = ["measure", "--runtime", "torch", "--arch", "nb201:1462", "--input-shape", "2,3,32,32", "--profile", "quick"]
    assert main([*argv, "--batch", "5", *TINY]) == 2
    assert capsys.readouterr().err == ("hwl measure: error: input_shape [2, 3, 32, 32] says batch 2, the request "
                                       "batch 5: ask for batch 2 too (hwl measure --batch 2; a profile's "
                                       "batch_size = 2)\n")


def test_a_torch_record_names_the_dataset_its_network_was_built_for(capsys):
    """nb201:1462 built for cifar100 (100 classes) was recorded as 'nb201:1462', as its cifar10 network is."""
    rc = main(["measure", "--runtime", "torch", "--arch", "nb201:1462:cifar100", "--cores", "0", "--profile", "quick",
               "--json", *TINY])
    spec = json.loads(capsys.readouterr().out)["measurement"]["spec"]
    assert rc == 0 and spec["arch"] == "nb201:1462:cifar100" and spec["input_shape"] == [1, 3, 32, 32]


def test_more_threads_than_the_pinned_cores_are_refused(onnx_path, capsys):
    """`--threads 2 --cores 0` was timed with two threads on one core and said nothing (a profile refuses it)."""
    assert main(["measure", str(onnx_path), "--threads", "2", "--cores", "0", "--profile", "quick", *TINY]) == 2
    assert capsys.readouterr().err == ("hwl measure: error: --threads 2 exceeds the 1 core of --cores 0; pin at least "
                                       "one core per thread\n")


def test_a_command_tool_this_machine_lacks_is_a_usage_error(capsys):
    """A --command naming no installed program was the model's runtime_error record, exit status 1, its message
    prefixed by the agent's error class ('RuntimeUnavailable: cannot run ...'), as if the model had failed."""
    argv = ["measure", "--runtime", "command", "--command", "/nonexistent/hwl-tool --runs 1", "--regex", "t=([0-9.]+)"]
    assert main([*argv, "--profile", "quick", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwl measure: error: cannot run the command runtime's tool '/nonexistent/hwl-tool'")
    assert err.count("\n") == 1 and "RuntimeUnavailable" not in err


def test_a_provider_this_machine_lacks_is_a_usage_error(onnx_path, capsys):
    """--option provider=cuda on a machine without CUDA was the model's load_error record with exit status 1."""
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine's onnxruntime has CUDA")
    assert main(["measure", str(onnx_path), "--option", "provider=cuda", "--profile", "quick", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwl measure: error: onnxruntime here has no CUDAExecutionProvider; available: ")
    assert err.count("\n") == 1


def test_a_failure_is_printed_on_one_line_into_a_pipe(tmp_path, capsys):
    """The table view broke a failure's one-line message at 80 columns (rich's width off a terminal), so a log
    held 'load_error: onnxruntime could not load the model: [ONNXRuntimeError] : 7 :' and the rest on the next
    line."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["measure", str(bad), "--profile", "quick", *TINY]) == 1
    out = capsys.readouterr().out
    assert out.startswith("load_error: onnxruntime could not load the model: ") and out.count("\n") == 1
    assert len(out) > 100 and out.rstrip().endswith("protobuf parsing failed.")


@pytest.mark.parametrize("runtime", ["ort", "tvm"])
def test_an_empty_model_file_is_named_as_empty(tmp_path, runtime, capsys):
    """A 0-byte file (an export cut short, a copy to a full disk) was a load_error record saying 'No graph was found
    in the protobuf' (onnxruntime) or 'The model does not have an ir_version set properly' (TVM)."""
    (tmp_path / "m.onnx").touch()
    assert main(["measure", str(tmp_path / "m.onnx"), "--runtime", runtime, "--profile", "quick", *TINY]) == 2
    assert capsys.readouterr().err == (f"hwl measure: error: model file {tmp_path / 'm.onnx'} is empty (0 bytes): "
                                       "export or copy it again\n")


@pytest.mark.parametrize("runtime", ["ort", "tvm"])
def test_an_integer_model_is_not_recorded_as_float32(tmp_path, runtime, capsys):
    """A model with no floating-point input or output (uint8 in and out, as an integer-quantized one) was recorded
    with the request's default dtype, float32, beside the fp32 models it was to be compared with."""
    import onnx
    from onnx import TensorProto, helper
    x, y = (helper.make_tensor_value_info(n, TensorProto.UINT8, [1, 16]) for n in "xy")
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "u8", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "u8.onnx")
    argv = ["measure", str(tmp_path / "u8.onnx"), "--runtime", runtime, "--profile", "quick", "--json", *TINY]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["measurement"]["spec"]["dtype"] == "uint8"


@pytest.mark.parametrize("argv, message", [
    (["--option", 'provider=["cpu"]'], "onnxruntime option provider=['cpu']; valid: cpu, cuda"),
    (["--option", 'graph_optimization={"level": 1}'], "onnxruntime option graph_optimization={'level': 1}; valid: "),
    (["--runtime", "tvm", "--option", "cc=[1]"], "tvm option cc=[1]; must be a path"),
    (["--runtime", "tvm", "--option", "library_dir=[1]"], "tvm option library_dir=[1]; must be a path"),
    (["--runtime", "command", "--command", "echo t=1", "--regex", "t=([0-9]+)", "--option", "unit=[1]"],
     "command option unit=[1]; valid: "),
    (["--runtime", "command", "--command", "echo t=1", "--option", "regex=[1]"], "command option regex [1] does not "
                                                                                  "compile"),
])
def test_an_option_value_of_the_wrong_type_is_a_usage_error(onnx_path, argv, message, capsys):
    """--option values are read as JSON, so a list or an object reached the runtime, which failed on it: the
    model's load_error 'TypeError: unhashable type: 'list'' (or a compile_error), exit status 1."""
    model = [] if "command" in argv else [str(onnx_path)]
    assert main(["measure", *model, *argv, "--profile", "quick", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "TypeError" not in err


def test_a_command_naming_the_model_file_needs_one(capsys):
    """`--command "bench --graph {model}"` without a model file ran the tool with an empty word for its file: the
    tool's own failure ("cannot access ''") as a runtime_error record, exit status 1."""
    argv = ["measure", "--runtime", "command", "--command", f"{sys.executable} -c \"print('t=1')\" {{model}}",
            "--regex", r"t=([0-9.]+)", "--profile", "quick", *TINY]
    assert main(argv) == 2
    assert capsys.readouterr().err == ("hwl measure: error: --command names {model}, but no model file is given: "
                                       "hwl measure MODEL.onnx --runtime command ...\n")


def test_a_command_tool_may_take_more_threads_than_the_cores_it_is_pinned_to_here(capsys):
    """The command runtime's {threads} go to the tool, which may run them on another device (adb shell bench -x 4)
    while it waits here on one core: refusing that as oversubscription would refuse a phone its threads."""
    tool = f"{sys.executable} -c \"import sys; print('t=' + sys.argv[1])\" {{threads}}"
    argv = ["measure", "--runtime", "command", "--command", tool, "--regex", r"t=([0-9.]+)", "--threads", "4",
            "--cores", "0", "--profile", "quick", "--json", *TINY]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["measurement"]["stats"]["label_ms"] == 4.0
    # nor more than this machine has: 'threads' = 8 'asks more threads than the 2 core(s) usable here' (b0f55d7)
    threads = (os.cpu_count() or 1) + 6
    argv[argv.index("--threads") + 1], argv[argv.index("--cores") + 1] = str(threads), ""
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["measurement"]["stats"]["label_ms"] == threads
