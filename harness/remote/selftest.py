"""The self-test that closes ``hwl deploy``: one quick measurement through the real ssh transport.

Its record (outcome, median, fingerprint, agent version, time) is written next to the agent on
the device (``<agent_dir>/selftest.json``), so ``hwl status`` can show it from any coordinator.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
import time
from pathlib import Path

from agents.errors import PROTOCOL_ERRORS, HwlError
from agents.protocol import MEASURED_OUTCOMES, Measure
from harness.profiles import DeviceProfile
from harness.remote.deploy import DeployReport, agent_base, check_room
from harness.remote.host import Host

SELFTEST_ARCH = ("nb201", 1462)  # the coordinator's drift-canary cell: a mid-size NB201 model
SELFTEST_POLICY = {"repeats": 2, "cooldown_s": 0.0}
# The outcome of a self-test the agent answered with an error (cores it lacks, a runtime it has not...);
# its record keeps the error's class as "error".
REFUSED = "refused"
# The classes an agent's error reply is raised as; a lost link or an agent that did not start raises others.
AGENT_ERRORS = frozenset(PROTOCOL_ERRORS.values())


def selftest_failed(record: dict | None) -> bool:
    """True for a self-test record that measured nothing (the runtime failed, the model was refused...)."""
    return record is not None and record.get("outcome") not in MEASURED_OUTCOMES


def selftest_setup(profile: DeviceProfile) -> dict:
    """What the self-test measured with, as its record keeps it (JSON types)."""
    rt = profile.runtime
    return {"runtime": rt.kind, "threads": rt.threads, "cores": list(rt.cores or ()), "options": rt.options_dict()}


def record_other_setup(record: dict, bundle: str, profile: DeviceProfile) -> str | None:
    """Why the self-test ``record`` is not of agent ``bundle`` with ``profile``'s runtime settings, or None."""
    if record.get("bundle") != bundle:
        return f"of another agent ({record.get('bundle') or 'unknown'})"
    if record.get("setup") != selftest_setup(profile):
        return "of other runtime settings"
    return None


def selftest_other_setup(previous: dict, report: DeployReport, profile: DeviceProfile) -> str | None:
    """Why the self-test record ``previous`` is not of this deploy's setup, or None when it is."""
    why = record_other_setup(previous, report.bundle, profile)
    if why is None and report.changed:
        return "from before this deploy changed the device"
    return why


def selftest_still_holds(previous: dict | None, report: DeployReport, profile: DeviceProfile) -> bool:
    """Whether the device's last self-test can stand for this deploy: an ok one, of this agent, with this
    profile's runtime settings. Any other is run again (the user may have fixed the device or the profile)."""
    return bool(previous) and previous.get("outcome") == "ok" \
        and selftest_other_setup(previous, report, profile) is None


def selftest_model(artifact_dir: Path) -> tuple[Path, str]:
    """The self-test model exported into ``artifact_dir`` (a cache hit after the first time)."""
    from harness.export import export_one

    space, arch = SELFTEST_ARCH
    path = Path(export_one(space, arch, artifact_dir).path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def run_selftest(host: Host, profile: DeviceProfile, report: DeployReport, artifact_dir: Path) -> dict:
    """Measure the self-test model on the device; the record is also stored on the device. An agent's
    refusal (cores the device lacks...) is such a record too, outcome 'refused'; a lost link raises."""
    from harness.transport.ssh import SSHSession

    base = agent_base(host, profile.host.agent_dir)
    record_path = posixpath.join(base, "selftest.json")
    # the last record must not outlive a self-test that fails before writing its own: `hwl status` showed it
    host.run(f"rm -f {shlex.quote(record_path)}", check=False)
    rt = profile.runtime
    space, arch = SELFTEST_ARCH
    common = dict(runtime=rt.kind, threads=rt.threads, cores=tuple(rt.cores or ()), profile="quick",
                  policy=SELFTEST_POLICY, options=rt.options_dict(), labels={"selftest": True})
    if rt.kind == "torch":
        request = Measure(arch={"space": space, "key": arch, "dataset": None}, **common)
    else:
        path, sha = selftest_model(artifact_dir)
        request = Measure(model=str(path), sha256=sha, **common)
    started = time.time()
    refusal = None
    with SSHSession(host, agent_path=report.agent_path, python=report.python,
                    cache_dir=posixpath.join(base, "cache"), name=profile.name) as session:
        hello = session.hello
        try:
            reply = session.request(request)
        except HwlError as exc:
            if type(exc) not in AGENT_ERRORS:  # the link, not the agent: nothing is known of the self-test
                raise
            refusal = exc
    if refusal is None:
        stats = (reply.measurement or {}).get("stats") or {}
        outcome = {"outcome": reply.outcome, "message": reply.message, "median_ms": stats.get("median_ms")}
    else:  # kept so `hwl status` can say why (the cores are not there...), not only this deploy's output
        outcome = {"outcome": REFUSED, "message": str(refusal), "median_ms": None, "error": type(refusal).__name__}
    record = {**outcome, "agent_version": hello.agent_version, "bundle": report.bundle, "runtime": rt.kind,
              "setup": selftest_setup(profile),
              "fingerprint_id": hello.fingerprint_id, "fingerprint": hello.fingerprint,
              "time": started, "seconds": time.time() - started}
    text = json.dumps(record, sort_keys=True)
    # SFTP says only 'Failure' on a full disk: an OSError traceback, and the devices after this one not deployed
    check_room(host, base, len(text), "the self-test record", "give the profile an agent_dir on another disk")
    with host.sftp.open(record_path, "w") as f:
        f.write(text)
    return record


def read_selftest(host: Host, agent_dir: str) -> dict | None:
    """The last self-test record on the device, or None."""
    base = agent_base(host, agent_dir)
    out = host.run(f"cat {shlex.quote(posixpath.join(base, 'selftest.json'))}", check=False)
    if not out.ok or not out.stdout.strip():
        return None
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None
