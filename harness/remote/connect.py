"""From a device profile to a ``Host`` and an agent session on it."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from harness.errors import ProfileError
from harness.profiles import DeviceProfile, key_named_by
from harness.remote.host import Host
from harness.ssh_config import gateways


KNOWN_HOSTS_ENV = "HWL_KNOWN_HOSTS"


def host_for(profile: DeviceProfile, *, trust_new_host: bool = False) -> Host:
    """The SSH host of an ``ssh`` profile (nothing is opened yet)."""
    h = profile.host
    if h.transport != "ssh":
        raise ProfileError(f"device {profile.name} uses transport {h.transport!r}; only 'ssh' devices are "
                           "deployed over SSH")
    # --known-hosts sets HWL_KNOWN_HOSTS for every command (and, through Ray's local workers,
    # for the device actors); a profile's own known_hosts key wins.
    known_hosts = h.known_hosts or os.environ.get(KNOWN_HOSTS_ENV)
    common = dict(known_hosts=known_hosts, trust_new_host=trust_new_host, deploy_command=deploy_command(profile),
                  profile=profile.name)
    jump = None
    for hop in gateways(h.jump, key=h.key):  # settled as the device's own login was (harness.ssh_config)
        jump = Host(f"{profile.name}'s jump host {hop.name}", hop.address, hop.user, hop.key, port=hop.port,
                    jump=jump, **common)
    # named as the device: [host] name is the Ray node that drives it ('local' unless set), not the device's host
    return Host(profile.name, h.address, h.user, h.key, port=h.port or 22, jump=jump,
                key_named_by=key_named_by(profile), profile_file=profile.source, **common)


def deploy_command(profile: DeviceProfile) -> str:
    """The `hwl deploy` line that reaches ``profile`` as this command does, pasted as it is: by name where hwl
    finds the same file under that name, else by its file (a profile given by path is no known name), and with
    this command's --known-hosts (without it deploy checked, and recorded, the key in ~/.ssh/known_hosts)."""
    from harness.profiles import available_profiles

    known = available_profiles().get(profile.name)
    same = known is not None and profile.source and Path(profile.source).resolve() == known.resolve()
    words = ["hwl", "deploy", profile.name if same or not profile.source else profile.source]
    if not profile.host.known_hosts and os.environ.get(KNOWN_HOSTS_ENV):
        words += ["--known-hosts", os.environ[KNOWN_HOSTS_ENV]]
    return shlex.join(words)


def ssh_session_for(profile: DeviceProfile):
    """An ``SSHSession`` to the agent ``hwl deploy`` put on the profile's host."""
    from harness.transport.ssh import SSHSession

    h = profile.host
    return SSHSession(host_for(profile), agent_dir=h.agent_dir, python=h.python, use_venv=h.use_venv,
                      cache_quota_bytes=h.cache_quota_mb * 1024 * 1024, name=profile.name)
