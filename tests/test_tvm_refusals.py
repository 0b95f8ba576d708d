"""A TVM request that does not fit its model is refused before TVM is imported or anything is built: the refusals
below need the ONNX file, or a shipped library's bytes, alone. TVM's import took 4-5 s of each (longer on a Pi)."""
import json
import subprocess
import sys
from pathlib import Path

from onnx import TensorProto, helper

from agents.server import sha256_of
from tests.test_agent_runtimes import onnx_of, symbolic_onnx

ROOT = Path(__file__).resolve().parents[1]
# Each refusal as agents.child meets it: the adapter loaded by name, then prepare; what it said, and which of TVM's
# modules the process had imported by then.
REFUSE = """
import json, sys
from agents import runtimes
from agents.protocol import Measure
from agents.verified import read_verified
said = []
for fields in json.loads(sys.argv[1]):
    path = fields.get("model")
    request = Measure(id="t", runtime="tvm", sha256=fields.pop("sha256"), **fields)
    try:
        runtimes.load("tvm").prepare(request, read_verified(path, request.sha256) if path else None, sys.argv[2])
        said.append("measured")
    except Exception as exc:
        said.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"said": said, "tvm": sorted(m for m in sys.modules if m.split(".")[0] in ("tvm", "tvm_ffi"))}))
"""


def test_a_request_that_does_not_fit_the_model_is_refused_before_tvm_is_imported(tmp_path):
    def request(path: Path, **fields) -> dict:
        return {"model": str(path), "sha256": sha256_of(path), **fields}

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in "xy")
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [1, 4])
    const = helper.make_node("Constant", [], ["y"], value=helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0]))
    # a shipped library's bytes alone say it has no parallel loop: the refusal loads nothing, so bytes that are no
    # library at all show that as well
    library = tmp_path / "model.so"
    library.write_bytes(b"no parallel loop in here")
    cases = {
        "the model's input 'x' has a free dimension seq (axis 1)": request(symbolic_onnx(tmp_path / "seq.onnx",
                                                                                         ["N", "seq"])),
        "the model's input 'x' has batch size 1, not the request's 8": request(symbolic_onnx(tmp_path / "b1.onnx",
                                                                                             [1, 64]), batch=8),
        "the model has no inputs, so no batch size changes what it runs": request(onnx_of(
            tmp_path / "const.onnx", const, [], helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])), batch=8),
        "the model's input 'x' declares no shape": request(onnx_of(
            tmp_path / "shapeless.onnx", helper.make_node("Relu", ["x"], ["y"]),
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], y)),
        "UnsupportedOp: input 's' has type seq(tensor(float)), which the agent cannot feed": request(onnx_of(
            tmp_path / "seq_in.onnx", helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0), [seq], y)),
        "LoadFailure: the model's ONNX opset 99 is newer than": request(onnx_of(
            tmp_path / "future.onnx", helper.make_node("Relu", ["x"], ["y"]), [x], y, opset=99)),
        "BadRequest: tvm at 2 threads: TVM's default CPU build (untuned) has no parallel loop": {
            "sha256": "0" * 64, "input_shape": [1, 4], "threads": 2,
            "options": {"library": str(library), "library_sha256": sha256_of(library)}},
    }
    cache = tmp_path / "cache"
    out = subprocess.run([sys.executable, "-c", REFUSE, json.dumps(list(cases.values())), str(cache)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    refused = json.loads(out.stdout)
    assert len(refused["said"]) == len(cases), refused
    for expected, said in zip(cases, refused["said"]):
        assert expected in said, said
    assert refused["tvm"] == []
    assert not list(cache.glob("tvm/*.so"))  # nothing was built
