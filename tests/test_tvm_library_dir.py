"""options.library_dir: a campaign's tvm device finds each model's prebuilt (e.g. tuned) library by the model's
sha256, through the real agent, and loads none whose bytes changed since scripts/build_tvm_libraries recorded them
or that lies in a folder other users may write."""
import shutil
import sys

import pytest

from agents.protocol import Measure
from harness.remote.deploy import deploy
from harness.remote.tvm_libraries import LocalLibraries, push_libraries
from harness.transport import LocalSession
from harness.transport.ssh import SSHSession
from scripts._tvm_libraries import build_all
from tests import test_tvm_library_cache as cache_tests
from tests.sshd import sshd_available, trusted_loopback_host

pytest.importorskip("tvm")
pytestmark = [pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler"),
              pytest.mark.slow]  # a TVM build takes seconds
relu_model, planted = cache_tests.relu_model, cache_tests.planted


def _request(model, sha, library_dir, threads=1, cores=(0,)):
    return Measure(id="t", runtime="tvm", model=str(model), sha256=sha, threads=threads, cores=cores,
                   profile="quick", policy=cache_tests.TINY, options={"library_dir": str(library_dir), "tuned": True})


@pytest.fixture
def agent():
    with LocalSession(cores=[0]) as session:
        yield session


def test_the_agent_measures_the_library_built_for_the_model_and_nothing_else(relu_model, planted, tmp_path, agent):
    model, sha = relu_model
    libs = tmp_path / "libs"
    (lib,) = build_all([model], libs, "llvm", log=lambda _: None)
    assert lib.name == f"{sha}.so" and (libs / f"{sha}.so.sha256").is_file()

    res = agent.request(_request(model, sha, libs))
    assert res.outcome in ("ok", "unstable"), res.message
    m = res.record()
    assert m.metadata["runtime"]["compile_ms"] is None and m.metadata["runtime"]["tuned"] is True
    assert m.spec.build_hash == (libs / f"{sha}.so.sha256").read_text().strip()  # which library, by its bytes
    assert m.spec.input_shape == (1, 4)  # from the model, as a build would take it

    # The relu library has no parallel loop, so it is refused at 2 threads rather than recorded at 2 for 1.
    res = agent.request(_request(model, sha, libs, threads=2, cores=(0, 1)))
    assert res.outcome == "load_error" and "has no parallel loop" in res.message, res.message

    lib.rename(libs / "elsewhere.so")  # a model the folder has no library for: refused, not built untuned instead
    res = agent.request(_request(model, sha, libs))
    assert res.outcome == "load_error" and f"has no library for this model ({sha}.so)" in res.message
    assert "scripts/build_tvm_libraries" in res.message and "hwl deploy DEVICE --tvm-libraries DIR" in res.message
    (libs / "elsewhere.so").rename(lib)

    evil, marker = planted
    shutil.copy(evil, lib)  # swapped on the device after its digest was recorded
    res = agent.request(_request(model, sha, libs))
    assert not marker.exists(), "the agent loaded a library whose bytes are not those recorded"
    assert res.outcome == "load_error" and "does not hash as its" in res.message, res.message


def test_a_library_folder_other_users_may_write_is_refused(relu_model, planted, tmp_path, agent):
    model, sha = relu_model
    evil, marker = planted
    libs = tmp_path / "libs"
    build_all([model], libs, "llvm", log=lambda _: None)
    libs.chmod(0o777)  # anyone could have put a library and its digest there
    res = agent.request(_request(model, sha, libs))
    assert res.outcome == "load_error" and "no other user may write" in res.message, res.message
    missing = agent.request(_request(model, sha, tmp_path / "nowhere"))
    assert missing.outcome == "load_error" and "is not a folder on this device" in missing.message
    assert not marker.exists()


def test_the_build_command_also_builds_the_canary_cell_every_device_measures(tmp_path, capsys):
    """The campaign's drift canary and deploy's self-test measure NB201 1462 on every device: a folder without its
    library failed them on a device whose campaign never named 1462."""
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    from agents.server import sha256_of
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_tvm_libraries"
    loader = importlib.machinery.SourceFileLoader("build_tvm_libraries", str(script))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    store, libs = tmp_path / "store", tmp_path / "libs"
    assert module.main(["--space", "nb201", "--archs", "0", "--store", str(store), "--out", str(libs)]) == 0
    assert "2 libraries in" in capsys.readouterr().out
    assert {f"{sha256_of(m)}.so" for m in store.glob("*.onnx")} == {p.name for p in libs.glob("*.so")}
    assert len(list(store.glob("*.onnx"))) == 2


@pytest.mark.skipif(not sshd_available(), reason="openssh-server not installed")
def test_deploy_copies_the_libraries_into_library_dir_and_the_agent_there_loads_them(relu_model, tmp_path):
    # README told the user to scp the folder and chmod it themselves; deploy copies it now, checked both ends
    model, sha = relu_model
    build_all([model], tmp_path / "tvm-libs", "llvm", log=lambda _: None)
    local = LocalLibraries.read(tmp_path / "tvm-libs")
    device_libs = tmp_path / "device" / "tvm-libs"  # not there yet: deploy makes it
    (tmp_path / "ssh").mkdir()
    srv, host = trusted_loopback_host(tmp_path / "ssh")
    try:
        report = deploy(host, runtime="tvm", python=sys.executable, agent_dir=str(tmp_path / "hwl"), use_venv=False)
        step = push_libraries(host, local, str(device_libs), sys.executable)
        assert step == f"copied 1 TVM library to {device_libs} (sha256 verified)"
        assert push_libraries(host, local, str(device_libs), sys.executable) == \
            f"unchanged: 1 TVM library in {device_libs}"
        (device_libs / f"{sha}.so").write_bytes(b"changed on the device")
        device_libs.chmod(0o777)  # a folder any user may write: the agent would refuse it
        assert push_libraries(host, local, str(device_libs), sys.executable).startswith("copied 1 TVM library")
        assert device_libs.stat().st_mode & 0o777 == 0o755 and not list(device_libs.glob("*.part"))
        assert (device_libs / f"{sha}.so").read_bytes() == (tmp_path / "tvm-libs" / f"{sha}.so").read_bytes()
        with SSHSession(host, agent_path=report.agent_path, python=report.python,
                        cache_dir=str(tmp_path / "hwl" / "cache")) as session:
            res = session.request(_request(model, sha, device_libs))
        assert res.outcome in ("ok", "unstable"), res.message
        assert res.record().spec.build_hash == local.files[f"{sha}.so"]  # the copied library, by its bytes
    finally:
        host.close()
        srv.stop()
