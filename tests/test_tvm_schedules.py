"""build_library's untuned schedules: "dlight" and "ms-sample" give the kernels parallel loops that "none" (TVM's
default CPU pipeline) lacks, and all compute what onnxruntime computes. Real TVM builds of a one-conv model."""
import numpy as np
import pytest

from agents.errors import BadRequest
from scripts._agent_bench import tiny_conv_onnx

tvm = pytest.importorskip("tvm")
pytestmark = pytest.mark.slow  # two TVM builds take seconds


def _run(lib_path, x):
    from tvm import relax
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    return (out if hasattr(out, "numpy") else out[0]).numpy()


def _assert_computes_what_onnxruntime_does(lib, model):
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    expected = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(_run(lib, x), expected, rtol=1e-4, atol=1e-5)


def test_dlight_schedules_parallel_loops_that_compute_what_onnxruntime_does(tmp_path):
    from agents.runtimes.tvm_vm import build_library, runs_parallel_loops
    model = tiny_conv_onnx(tmp_path / "conv.onnx")["path"]
    plain = build_library(model, tmp_path / "none.so")
    scheduled = build_library(model, tmp_path / "dlight.so", schedule="dlight")
    assert not runs_parallel_loops(plain.read_bytes()) and runs_parallel_loops(scheduled.read_bytes())
    for lib in (plain, scheduled):
        _assert_computes_what_onnxruntime_does(lib, model)


def _tuner_ffi_is_broken() -> bool:
    import tvm_ffi

    from agents.runtimes.tvm_vm import BROKEN_TUNER_FFI
    return tvm_ffi.__version__.startswith(BROKEN_TUNER_FFI)


def test_metaschedule_builds_name_what_they_lack_instead_of_crashing(tmp_path):
    """With apache-tvm-ffi 0.1.15 MetaSchedule segfaulted: the build process died with no word on why."""
    from agents.runtimes.tvm_vm import build_library
    model = tiny_conv_onnx(tmp_path / "conv.onnx")["path"]
    with pytest.raises(BadRequest, match="needs the device's core count in the target"):
        build_library(model, tmp_path / "x.so", "llvm", schedule="ms-sample")
    if not _tuner_ffi_is_broken():
        pytest.skip("this apache-tvm-ffi runs MetaSchedule")
    with pytest.raises(BadRequest, match="segfaults with apache-tvm-ffi 0.1.15.*apache-tvm-ffi>=0.1.14,<0.1.15"):
        build_library(model, tmp_path / "x.so", {"kind": "llvm", "num-cores": 2}, schedule="ms-sample")
    with pytest.raises(BadRequest, match=r"TVM tuning \(tune_trials > 0\) runs MetaSchedule, which segfaults"):
        build_library(model, tmp_path / "x.so", tune_trials=1, tuning_dir=tmp_path / "tuning")


def test_an_unknown_schedule_is_named(tmp_path):
    from agents.runtimes.tvm_vm import build_library
    model = tiny_conv_onnx(tmp_path / "conv.onnx")["path"]
    with pytest.raises(BadRequest, match="TVM schedule 'fast' is not known; valid: none, dlight, ms-sample"):
        build_library(model, tmp_path / "x.so", schedule="fast")


def test_the_agent_builds_with_a_schedule_caches_it_apart_and_runs_it_on_two_threads(tmp_path):
    """Before, every agent build was TVM's plain one: no parallel loop, so a request at 2 threads was refused."""
    from agents.protocol import Measure
    from agents.runtimes.tvm_vm import build_hash, runs_parallel_loops
    from harness.transport import LocalSession
    from tests.test_tvm_library_cache import TINY

    model = tiny_conv_onnx(tmp_path / "conv.onnx")

    def request(schedule, threads, **options):
        return Measure(id="t", runtime="tvm", model=model["path"], sha256=model["sha256"], threads=threads,
                       cores=tuple(range(threads)), profile="quick", policy=TINY,
                       options={"schedule": schedule, **options})

    with LocalSession(cores=[0], cache_dir=tmp_path / "cache") as agent:
        res = agent.request(request("dlight", 2))
        assert res.outcome in ("ok", "unstable"), res.message
        m = res.record()
        assert m.spec.threads == 2 and m.metadata["runtime"]["parallel_loops"] is True
        assert m.metadata["runtime"]["schedule"] == "dlight" and m.metadata["runtime"]["compile_ms"] > 0
        assert m.spec.build_hash == build_hash(model["sha256"], "llvm", 3, "dlight") != build_hash(model["sha256"],
                                                                                                      "llvm", 3)
        again = agent.request(request("dlight", 2)).record()
        assert again.metadata["runtime"]["library_cached"] and again.spec.build_hash == m.spec.build_hash
        plain = agent.request(request("none", 2))  # the plain build is another library, with no parallel loop
        assert plain.outcome == "load_error" and "has no parallel loop" in plain.message, plain.message
        sampled = agent.request(request("ms-sample", 1, target='{"kind": "llvm", "num-cores": 2}'))
        if _tuner_ffi_is_broken():
            assert sampled.outcome == "load_error" and "segfaults with apache-tvm-ffi" in sampled.message
        else:  # one sampled build serves both checks: it is TVM's slowest (a minute of TVMScript import)
            assert sampled.outcome in ("ok", "unstable") and sampled.record().metadata["runtime"]["parallel_loops"]
            library = tmp_path / "cache" / "tvm" / f"{sampled.record().spec.build_hash}.so"
            assert runs_parallel_loops(library.read_bytes())
            _assert_computes_what_onnxruntime_does(library, model["path"])
