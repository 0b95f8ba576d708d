"""CommandSession: a 'device' reached through a host-side tool, with real commands."""
import hashlib
import sys
from pathlib import Path

import pytest

from agents.protocol import Measure, Result
from harness.transport.command import CommandSession
from harness.transport.errors import ConnectionLost

TOOL = Path(__file__).resolve().parents[1] / "scripts" / "ort_benchmark_tool.py"
TINY = {"repeats": 2, "cooldown_s": 0.0}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from harness.export import export_one
    path = Path(export_one("nb201", 77, tmp_path_factory.mktemp("models")).path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _request(model, device_dir):
    path, sha = model
    # The run template reads the copy on the "device" (a folder standing in for /data/local/tmp).
    run = f"{sys.executable} {TOOL} --graph {device_dir}/{{sha256}}.onnx --runs 10 --warmup 2"
    return Measure(runtime="command", model=str(path), sha256=sha, profile="quick", policy=TINY,
                   options={"command": run, "regex": r"run \d+: ([0-9.]+) ms"})


def test_pushes_once_then_measures_through_the_tool(model, tmp_path):
    device_dir = tmp_path / "device"
    device_dir.mkdir()
    push = f"cp {{model}} {device_dir}/{{sha256}}.onnx"
    with CommandSession(push_template=push, name="phone") as session:
        for _ in range(2):
            reply = session.request(_request(model, device_dir))
            assert isinstance(reply, Result) and reply.measurement is not None, reply.message
            assert len(reply.measurement["samples_ns"][0]) == 10  # one sample per printed run
    assert list(session.pushed) == [model[1]]
    assert (device_dir / f"{model[1]}.onnx").read_bytes() == model[0].read_bytes()


def test_check_template_skips_push_when_device_has_the_model(model, tmp_path):
    device_dir = tmp_path / "device"
    device_dir.mkdir()
    (device_dir / f"{model[1]}.onnx").write_bytes(model[0].read_bytes())
    with CommandSession(push_template=f"cp {{model}} {device_dir}/{{sha256}}.onnx",
                        check_template=f"test -f {device_dir}/{{sha256}}.onnx") as session:
        assert session.request(_request(model, device_dir)).measurement is not None
    assert list(session.pushed) == []


def test_a_long_session_remembers_only_its_latest_pushes(tmp_path):
    """A month-long campaign pushes one model per architecture: the session's record of its uploads
    keeps the latest ones instead of one entry per upload for ever."""
    log = tmp_path / "pushes.log"
    session = CommandSession(push_template=f"sh -c 'echo {{sha256}} >> {log}'")
    shas = [f"{i:064x}" for i in range(150)]
    for sha in shas:
        session.stage_model(str(tmp_path / f"{sha}.onnx"), sha)
    assert log.read_text().split() == shas  # every model pushed, once
    assert len(session.pushed) == 100 and list(session.pushed) == shas[-100:]


def test_failed_push_is_connection_lost(model, tmp_path):
    with CommandSession(push_template="false {model}") as session:
        with pytest.raises(ConnectionLost, match="exited 1"):
            session.request(_request(model, tmp_path))


def _hash_check(device_dir) -> str:
    return f"sh -c 'test \"$(sha256sum {device_dir}/{{sha256}}.onnx | cut -c1-64)\" = {{sha256}}'"


def test_a_copy_cut_short_on_the_device_is_pushed_again_and_one_cut_in_transit_never_runs(model, tmp_path):
    """With a check that hashes the copy, a truncated copy left by an earlier push is replaced, and a
    push that truncates is refused after it (before, the tool ran the truncated file)."""
    device_dir = tmp_path / "device"
    device_dir.mkdir()
    copy = device_dir / f"{model[1]}.onnx"
    copy.write_bytes(model[0].read_bytes()[:100])
    with CommandSession(push_template=f"cp {{model}} {device_dir}/{{sha256}}.onnx",
                        check_template=_hash_check(device_dir)) as session:
        assert session.request(_request(model, device_dir)).measurement is not None
    assert list(session.pushed) == [model[1]] and copy.read_bytes() == model[0].read_bytes()
    copy.unlink()
    cut_short = f"sh -c 'head -c 100 {{model}} > {device_dir}/{{sha256}}.onnx'"
    with CommandSession(push_template=cut_short, check_template=_hash_check(device_dir)) as session:
        with pytest.raises(ConnectionLost, match="fails the profile's check after its push"):
            session.request(_request(model, device_dir))
    assert list(session.pushed) == []



def test_every_placeholder_a_profile_may_give_push_and_check_is_filled(tmp_path):
    """The profile check refuses any placeholder but these (harness.profiles.TEMPLATE_PLACEHOLDERS): the session
    fills each of them, in the push and in the check (which fails until the push wrote its file)."""
    from harness.profiles import TEMPLATE_PLACEHOLDERS

    pushed, checked = tmp_path / "pushed", tmp_path / "checked"

    def every(key):
        return " ".join("{" + name + "}" for name in TEMPLATE_PLACEHOLDERS[key])
    session = CommandSession(push_template=f"sh -c 'echo {every('host.push')} > {pushed}'",
                             check_template=f"sh -c 'echo {every('host.check')} >> {checked}; test -e {pushed}'")
    session.stage_model("/models/m.onnx", "ab" * 32)
    assert pushed.read_text() == f"/models/m.onnx {'ab' * 32}\n"
    assert checked.read_text() == f"/models/m.onnx {'ab' * 32}\n" * 2  # before and after the push


def test_a_model_path_with_a_space_or_a_quote_is_pushed_by_a_shell_script(model, tmp_path):
    """The push's script got {model} unquoted: a path with a space was two paths (a push that failed as the
    device's, every time), one with a quote a syntax error. It is filled shell-quoted there."""
    local = tmp_path / "it's my models" / "m.onnx"
    local.parent.mkdir()
    local.write_bytes(model[0].read_bytes())
    device_dir = tmp_path / "device"
    device_dir.mkdir()
    session = CommandSession(push_template=f"sh -c 'cp {{model}} {device_dir}/{{sha256}}.onnx'",
                             check_template=_hash_check(device_dir))
    session.stage_model(str(local), model[1])
    assert (device_dir / f"{model[1]}.onnx").read_bytes() == local.read_bytes()
