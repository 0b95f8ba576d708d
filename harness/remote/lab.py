"""Operations over the lab's SSH devices: deploy, undeploy, status, logs.

Multi-device calls return a :class:`GroupResult` (``succeeded`` and ``failed`` maps, as
Fabric's groups do), so one unreachable Pi never hides what happened on the others.
"""
from __future__ import annotations

import logging
import posixpath
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path

from agents.errors import HwlError
from agents.protocol import MEASURED_OUTCOMES
from harness.errors import ProfileError
from harness.profiles import DeviceProfile
from harness.remote.connect import host_for
from harness.remote.bundle import current_bundle_name
from harness.remote.deploy import agent_base, deploy, locate_agent, profile_builds_from_onnx, undeploy
from harness.remote.errors import HostUnreachable
from harness.remote.tvm_libraries import LocalLibraries, library_dir_of, prune_libraries, push_libraries
from harness.remote.selftest import (read_selftest, record_other_setup, run_selftest, selftest_other_setup,
                                     selftest_still_holds)

log = logging.getLogger(__name__)


@dataclass
class GroupResult:
    """Per-device outcome of a lab-wide operation."""

    succeeded: dict[str, object] = field(default_factory=dict)
    failed: dict[str, Exception] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _ssh_only(profile: DeviceProfile) -> None:
    if profile.host.transport != "ssh":
        raise ProfileError(f"{profile.name} uses transport {profile.host.transport!r}: deploy, undeploy and logs "
                           "are for 'ssh' devices (local devices need nothing; command devices use their vendor tool)")


def _check_wheel_dir(profile: DeviceProfile) -> None:
    """The profile's ``wheel_dir``, read on this machine, refused before the device is reached when it is no folder:
    deploy made the device's venv first, then said 'wheel directory ... has no .whl files' of a folder not there,
    naming neither the profile nor its key (a relative path is read from the folder hwl runs in)."""
    folder = Path(profile.host.wheel_dir).expanduser()
    if folder.is_dir():
        return
    why = "is a file, not a folder" if folder.exists() else "does not exist"
    where = "" if folder.is_absolute() else f" (read from the folder hwl runs in: {folder.absolute()})"
    raise ProfileError(f"{profile.source}: key 'host.wheel_dir' = {profile.host.wheel_dir!r} {why}{where}")


def deploy_devices(profiles: list[DeviceProfile], *, artifact_dir: Path, trust_new_host: bool = False,
                   selftest: bool = True, tvm_libraries: LocalLibraries | None = None,
                   prune: bool = False) -> GroupResult:
    """Deploy the agent to each device, with ``tvm_libraries`` copied into each profile's library_dir (before the
    self-test, which loads its model's library from there), and with ``prune`` the libraries it no longer holds
    removed from there; re-running with nothing changed changes nothing."""
    group = GroupResult()
    for profile in profiles:
        try:
            _ssh_only(profile)
            h = profile.host
            if h.wheel_dir:
                _check_wheel_dir(profile)
            with host_for(profile, trust_new_host=trust_new_host) as host, host.said_if_lost("deploy"):
                report = deploy(host, runtime=profile.runtime.kind, python=h.python, agent_dir=h.agent_dir,
                                expected_machine=h.machine, wheel_dir=Path(h.wheel_dir) if h.wheel_dir else None,
                                use_venv=h.use_venv,
                                builds_from_onnx=profile_builds_from_onnx(profile.runtime.kind,
                                                                          profile.runtime.options_dict()))
                if tvm_libraries is not None:
                    library_dir = library_dir_of(profile)
                    if prune:  # first: the room stale libraries take on a full disk is the new ones'
                        report.steps.append(prune_libraries(host, tvm_libraries, library_dir, h.python))
                    report.steps.append(push_libraries(host, tvm_libraries, library_dir, h.python))
                previous = read_selftest(host, h.agent_dir)
                holds = selftest_still_holds(previous, report, profile)
                test = previous if holds or not selftest else run_selftest(host, profile, report, artifact_dir)
                # with --no-selftest the last record may be another setup's: its 'ok' says nothing of this one
                stale = selftest_other_setup(previous, report, profile) if previous and not selftest else None
                group.succeeded[profile.name] = {"report": report, "selftest": test, "stale": stale}
        except HwlError as exc:
            group.failed[profile.name] = exc
    return group


def undeploy_devices(profiles: list[DeviceProfile]) -> GroupResult:
    group = GroupResult()
    for profile in profiles:
        try:
            _ssh_only(profile)
            with host_for(profile) as host, host.said_if_lost("undeploy"):
                group.succeeded[profile.name] = undeploy(host, agent_dir=profile.host.agent_dir,
                                                         python=profile.host.python)
        except HwlError as exc:
            group.failed[profile.name] = exc
    return group


STATUS_FIELDS = ("device", "transport", "runtime", "reachable", "usable", "agent", "selftest", "selftest_error",
                 "selftest_message", "selftest_ms", "fingerprint_id", "selftest_other_setup", "state", "error",
                 "note")


def status_row(device: str, **found) -> dict:
    """A row of `hwl status` for ``device``: every field None but those ``found``."""
    return {**dict.fromkeys(STATUS_FIELDS), "device": device, **found}


def device_status(profile: DeviceProfile, *, device_states: dict | None = None) -> dict:
    """Reachable?, agent version, runtime, last self-test, quarantined? for one device; ``usable`` is False when
    what was found now keeps it from measuring (not reached, no agent or no Python for it, a failed self-test, a
    program its profile starts not found here)."""
    known = (device_states or {}).get(profile.name, {})
    row = status_row(profile.name, transport=profile.host.transport, runtime=profile.runtime.kind,
                     state=known.get("state"), error=known.get("error"))
    if profile.host.transport != "ssh":
        return _status_here(profile, row)
    try:
        with host_for(profile) as host, host.said_if_lost("status"):
            row["reachable"] = True
            agent_path, _, _ = locate_agent(host, agent_dir=profile.host.agent_dir, python=profile.host.python,
                                            use_venv=profile.host.use_venv)
            row["agent"] = posixpath.basename(agent_path)
            test = read_selftest(host, profile.host.agent_dir)
            # a record of other runtime settings or another agent than this code deploys (as deploy's rule)
            # says nothing of this setup: named as such, as `deploy --no-selftest` does, not shown as current
            stale = record_other_setup(test, current_bundle_name(), profile) if test else None
            if stale:
                row["selftest_other_setup"] = f"{test.get('outcome')}, {stale}"
            elif test:
                row.update(selftest=test.get("outcome"), selftest_error=test.get("error"),
                           selftest_message=test.get("message"), selftest_ms=test.get("median_ms"),
                           fingerprint_id=test.get("fingerprint_id"))
            # a self-test that measured nothing fails `hwl deploy`: a lab script reads it as a failure here too
            row["usable"] = row["selftest"] is None or row["selftest"] in MEASURED_OUTCOMES
    except HwlError as exc:
        # a link lost midway leaves the device no more usable than one never reached
        row["reachable"] = False if isinstance(exc, HostUnreachable) else bool(row["reachable"])
        _unusable(row, str(exc))
    return row


def _unusable(row: dict, why: str) -> None:
    """``row`` of a device that cannot measure as it stands, for ``why``."""
    row["usable"] = False
    # what is wrong now comes first: a quarantine's reason in the store is older news, and alone it hid
    # that the device cannot even be reached
    row["error"] = f"{why}; in the store it was {row['state']}: {row['error']}" if row["error"] else why


def _status_here(profile: DeviceProfile, row: dict) -> dict:
    """A local or command device's row: the programs its profile starts (``adb``, its tool, ``recover``), looked for
    on this machine, as a campaign's actor looks for them before it measures. Where that actor runs is known only
    for the [host] name 'local', this machine: a campaign with --address runs any other on the Ray node that offers
    its ``host:<name>``, so for those `hwl status` says where each campaign runs it and claims nothing of that node."""
    from harness.device_worker import check_host_programs  # a campaign's own check, not a copy of it

    here = profile.host.name == "local"
    row["reachable"] = row["usable"] = True if here and profile.host.transport == "local" else None
    elsewhere = ("one with --address runs it on the Ray node that offers "
                 f"{profile.host.resource}, which hwl status does not check from here")
    try:
        check_host_programs(profile)
    except HwlError as exc:
        _unusable(row, str(exc) if here else f"{exc} (a campaign without --address runs it here; {elsewhere})")
        return row
    if not here:
        row["note"] = (f"[host] name {profile.host.name!r} is not 'local': a campaign without --address runs it "
                       f"here ({socket.gethostname()}); {elsewhere}")
    return row


def device_logs(profile: DeviceProfile, *, lines: int = 100) -> str:
    """The tail of the agent's log on the device."""
    _ssh_only(profile)
    with host_for(profile) as host:
        path = posixpath.join(agent_base(host, profile.host.agent_dir), "agent.log")
        out = host.run(f"tail -n {int(lines)} {shlex.quote(path)}", check=False)
        if out.ok:
            return out.stdout
        # no log: on a device never deployed (or undeployed) that is what to say, as `hwl status` does
        locate_agent(host, agent_dir=profile.host.agent_dir, python=profile.host.python, use_venv=profile.host.use_venv)
        return f"(no agent log at {path} on {profile.name}: its agent has not run since it was deployed)\n"
