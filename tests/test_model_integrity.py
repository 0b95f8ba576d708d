"""What the agent runs is exactly the model bytes it hashed. The agent checked a file's sha256, then the runtime
opened it again by its path: a file swapped in between (here, for real, at the moment the measuring process
starts) was timed under the checked model's hash."""
import os
import stat
import sys
from pathlib import Path

import pytest

from agents.child import run_measurement
from agents.errors import HashMismatch
from agents.protocol import Measure
from agents.server import resolve_model, sha256_of

TINY = {"warmup_min_runs": 2, "warmup_min_s": 0.01, "repeats": 2, "window_min_runs": 5, "window_min_s": 0.02,
        "cooldown_s": 0.0}


def relu_onnx(path: Path, width: int) -> Path:
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def swapping_python(tmp_path: Path, source: Path, target: Path) -> str:
    """An interpreter for the measuring process that first replaces ``target`` by ``source``: the swap happens
    after the agent's check and before the child does anything."""
    wrapper = tmp_path / "python-that-swaps"
    wrapper.write_text(f'#!/bin/sh\ncp "{source}" "{target}.new" && mv "{target}.new" "{target}"\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.parametrize("runtime, options", [
    ("ort", {}),
    ("command", {"command": [sys.executable, "-c", "print('1.5 ms')"], "regex": "([0-9.]+) ms"}),
])
def test_a_model_swapped_after_its_check_is_refused_not_run(tmp_path, runtime, options):
    checked, other = relu_onnx(tmp_path / "model.onnx", 4), relu_onnx(tmp_path / "other.onnx", 7)
    sha = sha256_of(checked)
    request = Measure(id="swap", runtime=runtime, model=str(checked), sha256=sha, profile="quick", policy=TINY,
                      options=options)
    path = resolve_model(request, None)  # the agent's check passes: the file is still the one asked for
    with pytest.raises(HashMismatch) as refused:
        result = run_measurement(request, path, python=swapping_python(tmp_path, other, checked))
        pytest.fail(f"the swapped model was run: {result.outcome}, input shape "
                    f"{(result.measurement or {}).get('spec', {}).get('input_shape')}")
    said = str(refused.value)
    assert f"model {checked} has sha256 {sha256_of(checked)}, but the request says {sha}" in said
    assert "\n" not in said


def test_the_command_runtime_gives_its_tool_a_private_copy_of_the_checked_bytes(tmp_path):
    """The tool gets a path: not the model's own (any writer of its folder could swap it while the tool runs)
    but a read-only copy of the hashed bytes in a folder that only this user may enter, removed afterwards."""
    model = relu_onnx(tmp_path / "model.onnx", 4)
    sha = sha256_of(model)
    report = tmp_path / "seen.txt"
    tool = ("import hashlib, os, sys; p = sys.argv[1]; d = os.path.dirname(p); "
            f"open({str(report)!r}, 'w').write(' '.join([p, oct(os.stat(d).st_mode & 0o777), "
            "oct(os.stat(p).st_mode & 0o777), hashlib.sha256(open(p, 'rb').read()).hexdigest()])); print('2 ms')")
    request = Measure(id="copy", runtime="command", model=str(model), sha256=sha, profile="quick", policy=TINY,
                      options={"command": [sys.executable, "-c", tool, "{model}"], "regex": "([0-9.]+) ms"})
    result = run_measurement(request, resolve_model(request, None))
    assert result.outcome == "ok", result.message
    seen, folder_mode, file_mode, seen_sha = report.read_text().split()
    assert Path(seen) != model and Path(seen).name == model.name
    assert (folder_mode, file_mode, seen_sha) == ("0o700", "0o400", sha)
    assert not Path(seen).exists() and not Path(seen).parent.exists()
    assert stat.S_IMODE(os.stat(model).st_mode) & 0o200  # the model itself is left as it was


def add_weights_onnx(path: Path, width: int = 256) -> Path:
    """y = x + w, with w saved as ONNX external data: ``weights.bin`` beside the model, which no hash covers."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])
    w = numpy_helper.from_array(np.ones((1, width), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    return path


@pytest.mark.parametrize("runtime", ["ort", "tvm"])
def test_a_model_with_external_data_is_refused_in_one_line_not_run_with_unhashed_weights(tmp_path, monkeypatch,
                                                                                        runtime):
    """The hash covers the .onnx bytes; given those bytes, onnxruntime and TVM's importer read the weights from
    ``weights.bin`` in the working directory: the model was timed with weights nobody checked (swap them for a
    file of another size, or another model's, and the record still names the checked sha256)."""
    model = add_weights_onnx(tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)  # where the agent runs, with the side file there (a researcher's model folder)
    request = Measure(id="ext", runtime=runtime, model=str(model), sha256=sha256_of(model), profile="quick",
                      policy=TINY)
    result = run_measurement(request, resolve_model(request, None), cache_dir=tmp_path / "cache")
    assert (result.outcome, result.measurement) == ("load_error", None), result.message
    assert "keeps tensor data in files beside it (ONNX external data)" in result.message
    assert "onnx.save_model(onnx.load('model.onnx'), 'whole.onnx')" in result.message and "\n" not in result.message
