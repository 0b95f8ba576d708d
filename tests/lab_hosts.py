"""A small lab for tests: device hosts in network namespaces, each with its own sshd, and
ssh device profiles that point at them."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tests.campaign_helpers import FAST_POLICY
from tests.sshd import SSHServer, TestNetns


@dataclass
class LabHost:
    name: str
    netns: TestNetns
    sshd: SSHServer
    agent_dir: Path


def start_lab_host(name: str, prefix: str, workdir: Path, client_key: Path, *, sensors: Path | None = None) -> LabHost:
    ns = TestNetns(f"hwlt-{name}", prefix).create()
    srv = SSHServer(workdir / f"sshd-{name}", address=ns.address, netns=ns, authorized_keys=[client_key],
                    sensors=sensors)
    srv.start()
    return LabHost(name, ns, srv, workdir / f"agent-{name}")


def stop_lab_host(host: LabHost) -> None:
    host.sshd.stop()
    host.netns.delete()


def write_ssh_profile(folder: Path, host: LabHost, key: Path, known_hosts: Path, *, policy=None,
                      reconnect_timeout_s: float = 60.0, cores=(1,)) -> Path:
    """An ssh device profile for a lab host; the agent runs with this test's Python (which has
    numpy and onnxruntime), so deploy installs nothing."""
    policy = FAST_POLICY if policy is None else policy
    lines = [f'name = "{host.name}"', 'device_class = "embedded_cpu"', "",
             "[host]", f'name = "{host.name}"', 'transport = "ssh"', f'address = "{host.netns.address}"',
             f"port = {host.sshd.port}", 'user = "root"', f'key = "{key}"', f'known_hosts = "{known_hosts}"',
             f'python = "{sys.executable}"', "use_venv = false", f'agent_dir = "{host.agent_dir}"',
             f"reconnect_timeout_s = {reconnect_timeout_s}", "",
             "[runtime]", 'kind = "onnxruntime"', "threads = 1", f"cores = {list(cores)}", "",
             "[measurement]", 'profile = "quick"', "cooldown_s = 0.0", "", "[measurement.policy]"]
    lines += [f"{k} = {v}" for k, v in policy.items()]
    path = folder / f"{host.name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
