"""Agent protocol: every message round-trips; bad lines raise ProtocolError / BadRequest."""
import json

import pytest

from agents.errors import BadRequest, HashMismatch, ProtocolError, error_class
from agents.protocol import (MAX_LINE_BYTES, MESSAGES, PROTOCOL_VERSION, Error, Hello, Measure, Ping, Result,
                             Shutdown, Status, decode, encode)

SHA = "a" * 64


@pytest.mark.parametrize("msg", [
    Hello(id="h", agent_version="0.1.0", pid=7, fingerprint={"cpu_model": "x"}, fingerprint_id="f" * 16,
          runtimes=("onnxruntime", "command"), cache_dir="/tmp/c"),
    Ping(id="p", sent_ns=5, agent_ns=9),
    Status(id="s", state="busy", job_id="m", jobs_done=3, uptime_s=1.5, load_avg=(0.1, 0.2, 0.3), pid=2),
    Measure(id="m", runtime="ort", model="/x.onnx", sha256=SHA, input_shape=(1, 3, 32, 32), cores=(0,),
            profile="quick", policy={"repeats": 2}, options={"spinning": False}, labels={"arch": "nb201:1"}),
    Measure(id="t", runtime="torch", arch={"space": "nb201", "key": 5}),
    Measure(id="c", runtime="command", options={"command": "echo 1", "regex": "(1)"}),
    Result(id="m", outcome="timeout", message="late", elapsed_s=2.0),
    Shutdown(id="x", reason="done"),
    Error(id="e", kind="HashMismatch", message="bad hash"),
])
def test_every_message_round_trips(msg):
    line = encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["type"] == msg.type and json.loads(line)["v"] == PROTOCOL_VERSION
    assert decode(line) == msg


def test_registry_names_every_message():
    assert set(MESSAGES) == {"hello", "ping", "status", "measure", "result", "shutdown", "error"}


@pytest.mark.parametrize("line, match", [
    (b"not json\n", "not a JSON line"),
    (b"[1, 2]\n", "must be a JSON object"),
    (b'{"type": "teleport", "v": "1.0"}\n', "unknown message type 'teleport'"),
    (b'{"type": "ping", "v": "2.0"}\n', f"2.0 is not compatible with this side's {PROTOCOL_VERSION}"),
    (b'{"type": "ping", "v": "one"}\n', "bad protocol version"),
])
def test_unreadable_lines_raise_protocol_error(line, match):
    with pytest.raises(ProtocolError, match=match):
        decode(line)


def test_over_long_line_is_refused():
    with pytest.raises(ProtocolError, match="over the"):
        decode(b" " * (MAX_LINE_BYTES + 1))


@pytest.mark.parametrize("body, match", [
    ({"type": "measure", "v": "1.0", "id": "m"}, "'runtime' must be one of"),
    ({"type": "measure", "v": "1.0", "id": "m", "runtime": "ort"}, "needs 'model'"),
    ({"type": "measure", "v": "1.0", "id": "m", "runtime": "ort", "model": "x.onnx"}, "'sha256'"),
    ({"type": "measure", "v": "1.0", "id": "m", "runtime": "ort", "model": "x", "sha256": SHA, "threads": 0},
     "'threads' must be >= 1"),
    ({"type": "measure", "v": "1.0", "id": "m", "runtime": "ort", "model": "x", "sha256": SHA, "cores": [-1]},
     "'cores'"),
    ({"type": "measure", "v": "1.0", "id": "m", "runtime": "ort", "model": "x", "sha256": SHA, "profile": "slow"},
     "'profile' must be one of quick, standard"),
    ({"type": "measure", "v": "1.0", "id": "m", "runtime": "command"}, "options.command"),
    ({"type": "ping", "v": "1.0", "color": "red"}, "unknown field"),
    ({"type": "ping"}, "missing field 'v'"),
    ({"type": "result", "v": "1.0", "outcome": "fine"}, "'outcome' must be one of"),
])
def test_missing_or_bad_fields_raise_bad_request(body, match):
    with pytest.raises(BadRequest, match=match):
        decode(json.dumps(body))


def test_newer_minor_version_ignores_unknown_fields():
    assert decode(b'{"type": "ping", "v": "1.9", "id": "p", "color": "red"}') == Ping(id="p", v="1.9")


def test_error_reply_re_raises_as_its_class():
    exc = Error(kind="HashMismatch", message="mismatch").to_exception()
    assert isinstance(exc, HashMismatch) and str(exc) == "mismatch"
    assert Error.from_exception(HashMismatch("m"), id="1") == Error(id="1", kind="HashMismatch", message="m")
    assert error_class("SomethingNew").__name__ == "HwlError"


def test_runtime_aliases():
    assert Measure(id="m", runtime="ort", model="x", sha256=SHA).runtime_name == "onnxruntime"


def test_torch_needs_an_architecture_not_a_file():
    with pytest.raises(BadRequest, match="runtime 'torch' needs 'arch'"):
        Measure(id="m", runtime="torch", model="x.onnx", sha256=SHA)


def test_a_hello_from_an_agent_before_1_1_reads_with_no_usable_cores():
    """Agents before protocol 1.1 send no usable_cores: the host reads an empty tuple (no check), and
    a 1.1 hello's list arrives as a tuple."""
    old = decode(b'{"type": "hello", "v": "1.0", "agent_version": "0.1.0", "pid": 7}\n')
    new = decode(encode(Hello(agent_version="0.2.0", usable_cores=(0, 1))))
    assert old.usable_cores == () and new.usable_cores == (0, 1)
