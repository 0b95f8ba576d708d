"""A compiled TVM library is code: the agent loads one only from a folder no other user can write, and only while
its bytes hash as they did when the agent built it. Attacked for real with a library whose load writes a file."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agents.child import run_measurement
from agents.protocol import Measure
from agents.runtimes.tvm_vm import build_hash
from agents.server import sha256_of

pytest.importorskip("tvm")
pytestmark = [pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler"),
              pytest.mark.slow]  # a TVM build takes seconds
TINY = {"warmup_min_runs": 2, "warmup_min_s": 0.01, "repeats": 2, "window_min_runs": 5, "window_min_s": 0.02,
        "cooldown_s": 0.0}


def _relu_onnx(folder: Path) -> tuple[Path, str]:
    import onnx
    import onnx.helper as helper
    x = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "relu.onnx"
    onnx.save(model, path)
    return path, sha256_of(path)


@pytest.fixture
def relu_model(tmp_path):
    return _relu_onnx(tmp_path)


@pytest.fixture(scope="module")
def built_by_the_agent(tmp_path_factory):
    """A cache folder where the agent built, cached and recorded the relu model's library (its first measurement
    with that cache). Tests that start from a cached library take a copy of their own: a build each took seconds."""
    folder = tmp_path_factory.mktemp("built")
    model, sha = _relu_onnx(folder)
    first = _measure(model, sha, folder / "cache")
    assert first.outcome in ("ok", "unstable"), first.message
    assert first.record().metadata["runtime"]["library_cached"] is False
    return folder / "cache"


def _cache_built_by_the_agent(built: Path, tmp_path: Path) -> Path:
    """A copy of the fixture's cache (modes kept: the agent's folder is private), for a test to swap files in."""
    return Path(shutil.copytree(built, tmp_path / "cache"))


@pytest.fixture
def planted(tmp_path):
    """A shared library that writes ``marker`` when it is loaded: what an attacker would put in the cache."""
    source, lib, marker = tmp_path / "evil.c", tmp_path / "evil.so", tmp_path / "LOADED"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                      f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(source)], check=True)
    return lib, marker


def _measure(model, sha, cache_dir=None, **fields):
    request = Measure(id="t", runtime="tvm", model=str(model), sha256=sha, cores=(0,), profile="quick", policy=TINY,
                      **fields)
    return run_measurement(request, Path(model), fingerprint_id="f" * 16, cache_dir=cache_dir)


def _plant(lib: Path, folder: Path, sha: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{build_hash(sha, 'llvm', 3)}.so"
    shutil.copy(lib, target)
    return target


def test_without_a_cache_no_library_is_taken_from_the_shared_temp_dir(relu_model, planted, tmp_path, monkeypatch):
    model, sha = relu_model
    evil, marker = planted
    shared_tmp = tmp_path / "tmp"  # as /tmp: anyone may write there, and the library's name is predictable
    shared_tmp.mkdir(mode=0o777)
    shared_tmp.chmod(0o1777)
    _plant(evil, shared_tmp / "tvm", sha)
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    res = _measure(model, sha)
    assert not marker.exists(), "the agent loaded a library another user put in the temp dir"
    assert res.outcome in ("ok", "unstable"), res.message
    assert not any(p.name.startswith("hwl-tvm-") for p in shared_tmp.iterdir())  # the private build is gone


def test_a_swapped_cached_library_is_built_again_not_loaded(relu_model, planted, built_by_the_agent, tmp_path):
    model, sha = relu_model
    evil, marker = planted
    cache = _cache_built_by_the_agent(built_by_the_agent, tmp_path)
    built = _plant(evil, cache / "tvm", sha)  # swapped for another file on the device
    again = _measure(model, sha, cache)
    assert not marker.exists(), "the agent loaded a cached library whose bytes changed since it built it"
    assert again.outcome in ("ok", "unstable"), again.message
    assert again.record().metadata["runtime"]["library_cached"] is False
    assert sha256_of(built) != sha256_of(evil)  # built again over the swapped file
    assert _measure(model, sha, cache).record().metadata["runtime"]["library_cached"] is True


def test_a_cache_other_users_may_write_is_not_used(relu_model, planted, tmp_path):
    model, sha = relu_model
    evil, marker = planted
    cache = tmp_path / "cache"
    library = _plant(evil, cache / "tvm", sha)
    Path(f"{library}.sha256").write_text(sha256_of(library) + "\n")  # even with a digest that matches
    os.chmod(cache / "tvm", 0o777)
    res = _measure(model, sha, cache)
    assert not marker.exists(), "the agent loaded a library from a folder any user may write"
    assert res.outcome in ("ok", "unstable"), res.message
    assert res.record().metadata["runtime"]["library_cached"] is False
    # The folder is ours: it is made ours alone (a umask of 002 leaves it group-writable) and the next build caches.
    assert (cache / "tvm").stat().st_mode & 0o777 == 0o755 and sha256_of(library) != sha256_of(evil)
    assert _measure(model, sha, cache).record().metadata["runtime"]["library_cached"] is True


def _swap_at_the_scan(monkeypatch, replacement: Path, target: Path) -> None:
    """Replace ``target`` when the adapter scans the library for parallel loops: after its hash was checked and
    before it is loaded (the adapter read the file once for each, so the load ran the replacement)."""
    from agents.runtimes import tvm_vm
    scan = tvm_vm.runs_parallel_loops

    def swap_then_scan(*args):
        shutil.copy(replacement, target)
        return scan(*args)
    monkeypatch.setattr(tvm_vm, "runs_parallel_loops", swap_then_scan)


def _prepare_in_process(model: Path, sha: str, cache_dir, **fields):
    from agents.runtimes import tvm_vm
    from agents.verified import read_verified
    request = Measure(id="t", runtime="tvm", model=str(model), sha256=sha, profile="quick", policy=TINY, **fields)
    return tvm_vm.prepare(request, read_verified(model, sha), cache_dir)


def test_a_cached_library_swapped_after_its_check_is_not_loaded(relu_model, planted, built_by_the_agent, tmp_path,
                                                                 monkeypatch):
    model, sha = relu_model
    evil, marker = planted
    cache = _cache_built_by_the_agent(built_by_the_agent, tmp_path)  # built, cached, its digest recorded
    cached = cache / "tvm" / f"{build_hash(sha, 'llvm', 3)}.so"
    _swap_at_the_scan(monkeypatch, evil, cached)
    try:
        prepared = _prepare_in_process(model, sha, cache)
    finally:
        assert not marker.exists(), "the agent loaded a library swapped after its hash was checked"
    assert prepared.metadata["library_cached"] is True and prepared.block(1) > 0  # the checked bytes ran


def test_a_prebuilt_library_is_loaded_only_as_the_request_vouches_for_it(relu_model, planted, built_by_the_agent,
                                                                         tmp_path, monkeypatch):
    """options.library was loaded (its code run) with no expected hash at all; it now needs library_sha256, the
    bytes must match it, and what is loaded is those bytes even when the file is swapped right after the check."""
    from agents.errors import HashMismatch
    model, sha = relu_model
    evil, marker = planted
    cache = _cache_built_by_the_agent(built_by_the_agent, tmp_path)
    shipped = tmp_path / "shipped.so"
    shutil.copy(cache / "tvm" / f"{build_hash(sha, 'llvm', 3)}.so", shipped)
    res = run_measurement(Measure(id="t", runtime="tvm", sha256=sha, input_shape=(1, 4), profile="quick",
                                  policy=TINY, options={"library": str(evil)}), None, fingerprint_id="f" * 16)
    assert res.outcome == "load_error" and "tvm option library needs library_sha256" in res.message, res.message
    with pytest.raises(HashMismatch, match=f"TVM library {evil} has sha256 {sha256_of(evil)}, but the request "
                                           f"says {sha256_of(shipped)}; refusing to run it"):
        run_measurement(Measure(id="t", runtime="tvm", sha256=sha, input_shape=(1, 4), profile="quick", policy=TINY,
                                options={"library": str(evil), "library_sha256": sha256_of(shipped)}), None)
    assert not marker.exists(), "the agent loaded a library the request did not vouch for"
    vouched = sha256_of(shipped)
    _swap_at_the_scan(monkeypatch, evil, shipped)
    prepared = _prepare_in_process(model, sha, None, input_shape=(1, 4),
                                   options={"library": str(shipped), "library_sha256": vouched})
    assert not marker.exists(), "the agent loaded a library swapped after its hash was checked"
    assert sha256_of(shipped) == sha256_of(evil)  # the swap happened, and the vouched-for bytes ran
    assert prepared.build_hash == vouched and prepared.block(1) > 0


def test_hwl_measure_vouches_for_the_library_it_names(relu_model, tmp_path, capsys):
    """`hwl measure --option library=FILE` passes the sha256 of the file it names, so the agent loads it."""
    import json

    from agents.runtimes.tvm_vm import build_library
    from harness.cli import main as hwl_main
    model, _ = relu_model
    library = build_library(model, tmp_path / "relu.so")
    assert hwl_main(["measure", str(model), "--runtime", "tvm", "--option", f"library={library}", "--input-shape",
                     "1,4", "--profile", "quick", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["measurement"]
    assert record["spec"]["build_hash"] == sha256_of(library)
    # a library is fed the input shape given: it ran batch 1 under a record of batch 5
    assert hwl_main(["measure", str(model), "--runtime", "tvm", "--option", f"library={library}", "--input-shape",
                     "1,4", "--batch", "5", "--profile", "quick"]) == 2
    assert capsys.readouterr().err == ("hwl measure: error: input_shape [1, 4] says batch 1, the request batch 5: ask "
                                       "for batch 1 too (hwl measure --batch 1; a profile's batch_size = 1)\n")


def test_a_library_sha256_that_is_no_sha256_is_one_line():
    res = run_measurement(Measure(id="t", runtime="tvm", sha256="0" * 64, input_shape=(1, 4), profile="quick",
                                  policy=TINY, options={"library": "/nowhere.so", "library_sha256": "ABC"}), None)
    assert res.outcome == "load_error" and res.message == (
        "BadRequest: tvm option library needs library_sha256, the library's sha256 as built (64 lower-case hex "
        "digits, as sha256sum prints them, not 'ABC'): loading a library runs its code, so the agent loads none it "
        "cannot check")


def test_a_model_with_a_free_batch_gets_a_library_per_batch(tmp_path):
    """A library is compiled for one input shape. The build hash named the model, target and settings only, so a
    model exported with a free batch, measured at batch 1 and then at batch 2 with the same cache, loaded the batch-1
    library for batch 2 (runtime_error: 'match_cast error, shape[0] mismatch'); each batch now has its own."""
    import onnx
    import onnx.helper as helper
    x = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "free_batch.onnx"
    onnx.save(model, path)
    sha, cache = sha256_of(path), tmp_path / "cache"
    one = _measure(path, sha, cache, batch=1)
    two = _measure(path, sha, cache, batch=2)
    assert one.outcome in ("ok", "unstable"), one.message
    assert two.outcome in ("ok", "unstable"), two.message
    assert two.record().spec.input_shape == (2, 4) and two.record().metadata["runtime"]["library_cached"] is False
    assert one.record().spec.build_hash != two.record().spec.build_hash
    again = _measure(path, sha, cache, batch=1).record()  # each batch's library stays cached under its own hash
    assert again.metadata["runtime"]["library_cached"] is True and again.spec.build_hash == one.record().spec.build_hash
