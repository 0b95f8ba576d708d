"""Put the agent on a device host over SSH.

Steps, each idempotent: probe the host's Python and machine; push the agent bundle into a
versioned directory ``<agent_dir>/agents/<version>-<sha12>/`` (skipped when that directory
is complete and each of its files still hashes as the bundle's), verify its sha256 on the
device before unpacking; make a venv for the runtime (``--system-site-packages``, so a
runtime the device already has, such as a vendor build of onnxruntime-gpu on a Jetson, is
reused) and install what is missing from the
package registry or from a wheel directory pushed from here (devices without internet);
point ``<agent_dir>/current`` at the bundle. Re-running with nothing changed changes nothing.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
import shlex
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.remote.bundle import AgentBundle, build_bundle
from harness.remote.errors import RemoteCommandError, RemoteError
from harness.remote.host import DISK_MARGIN_BYTES, Host
from harness.text import count

log = logging.getLogger(__name__)

MIN_PYTHON = (3, 10)
# Import name of each runtime, and the distributions that provide it.
RUNTIME_MODULES = {
    "onnxruntime": ("onnxruntime", ["onnxruntime"]),
    "tvm": ("tvm", ["apache-tvm"]),
    "torch": ("torch", ["torch"]),
    "command": (None, []),
}
# A TVM device given no prebuilt library (runtime.options.library or library_dir) builds each model from its ONNX
# file, which TVM's ONNX importer reads with the onnx package; apache-tvm does not install it, so every model
# (the self-test's first) failed there with "No module named 'onnx'".
ONNX_MODULE = {"onnx": "onnx"}
_PROBE = ("import json, os, platform, sys; print(json.dumps({'version': list(sys.version_info[:3]), "
          "'machine': platform.machine(), 'home': os.path.expanduser('~'), 'system': platform.system()}))")


class DeployError(RemoteError):
    """The host cannot take the agent; the message says what to change."""


@dataclass(frozen=True)
class HostFacts:
    python_version: tuple[int, int, int]
    machine: str
    home: str
    system: str


@dataclass
class DeployReport:
    """What ``deploy`` did on one host."""

    host: str
    bundle: str
    agent_path: str
    python: str
    facts: HostFacts | None = None
    steps: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(not s.startswith("unchanged") for s in self.steps)


def probe(host: Host, python: str) -> HostFacts:
    """The host's Python version, machine architecture and home directory."""
    try:
        out = host.run(f"{shlex.quote(python)} -c {shlex.quote(_PROBE)}").stdout
    except RemoteCommandError as exc:
        if exc.exit_status == 127:
            raise _no_python(host, python) from None
        raise
    info = json.loads(out.strip().splitlines()[-1])
    facts = HostFacts(tuple(info["version"]), info["machine"], info["home"], info["system"])
    if facts.python_version[:2] < MIN_PYTHON:
        have = ".".join(map(str, facts.python_version))
        raise DeployError(
            f"{host.name} has Python {have} at `{python}`, the agent needs >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}: "
            f"install a newer Python there and set {_python_key(host)} to it", host=host.name)
    return facts


def _no_python(host: Host, python: str) -> DeployError:
    return DeployError(f"{host.name} has no `{python}`: install Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} there, "
                       f"or set {_python_key(host)} to its path", host=host.name)


def _python_key(host: Host) -> str:
    """The profile key that names the device's Python, with its file where known: 'the device profile' alone sent
    the user looking through every profile."""
    return f"key 'host.python' of {host.profile_file}" if host.profile_file else "`python` in the device profile"


def _check_agent_python(host: Host, agent_python: str, use_venv: bool) -> None:
    """A DeployError when the Python the agent runs with is not on the host: the agent's start then failed with
    status 127 at each reconnect, and a campaign waited out its reply timeout before quarantining the device."""
    if host.run(f"command -v {shlex.quote(agent_python)}", check=False).ok:
        return
    if use_venv:
        raise DeployError(f"the agent's venv on {host.name} has no {agent_python}: run `{host.deploy_command}` to "
                          "make it again", host=host.name)
    raise _no_python(host, agent_python)


def _expand(path: str, home: str) -> str:
    return home + path[1:] if path == "~" or path.startswith("~/") else path


def deploy(host: Host, *, runtime: str = "onnxruntime", python: str = "python3", agent_dir: str = "~/.hwl",
           expected_machine: str | None = None, wheel_dir: Path | None = None,
           extra_packages: tuple[str, ...] = (), bundle: AgentBundle | None = None,
           use_venv: bool = True, builds_from_onnx: bool = False) -> DeployReport:
    """Deploy the agent to ``host`` (see the module docstring for the steps).

    ``use_venv=False`` runs the agent with ``python`` itself, for devices whose Python
    already has numpy and the runtime (nothing is installed then, only checked).
    ``builds_from_onnx``: the agent builds models from their ONNX files there (:func:`profile_builds_from_onnx`), so it
    needs the onnx package too.
    """
    if runtime not in RUNTIME_MODULES:
        raise DeployError(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(RUNTIME_MODULES)}",
                          host=host.name)
    wanted = wanted_modules(runtime, builds_from_onnx)
    bundle = bundle or build_bundle()
    facts = probe(host, python)
    if expected_machine and facts.machine != expected_machine:
        raise DeployError(f"{host.name} is {facts.machine}, but its profile says {expected_machine}: "
                          "fix `machine` in the profile (or point it at the right host)", host=host.name)
    base = _expand(agent_dir, facts.home)
    agent_path = posixpath.join(base, "agents", bundle.name)
    agent_python = posixpath.join(base, "venv", "bin", "python") if use_venv else python
    report = DeployReport(host.name, bundle.name, agent_path, agent_python, facts)
    report.steps.append(_push_bundle(host, bundle, agent_path, python))
    if use_venv:
        report.steps.append(_ensure_venv(host, python, base))
        report.steps.append(_ensure_packages(host, agent_python, base, wanted, wheel_dir, extra_packages))
    else:
        missing = _missing_modules(host, python, list(wanted))
        if missing:
            why = (" (onnx: without runtime.options.library or library_dir the agent builds each model from its ONNX "
                   "file there)" if "onnx" in missing else "")
            raise DeployError(f"{', '.join(missing)} not importable with `{python}` on {host.name}{why}: install "
                              "them there, or let deploy make a venv (use_venv = true)", host=host.name)
        report.steps.append("unchanged: using the host's own Python")
    report.steps.append(_set_current(host, base, bundle.name))
    return report


def _push_bundle(host: Host, bundle: AgentBundle, agent_path: str, python: str) -> str:
    marker = posixpath.join(agent_path, ".complete")
    if host.exists(marker):
        altered = _altered_files(host, bundle, agent_path, python)
        if not altered:
            return f"unchanged: agent {bundle.name}"
        # A file edited or removed on the device since (a debugging session): unpack the bundle again.
        log.warning("%s: %d file(s) of agent %s differ from its bundle (%s); pushing it again", host.name,
                    len(altered), bundle.name, ", ".join(altered[:3]))
        host.run(f"rm -f {shlex.quote(marker)}")
    host.run(f"mkdir -p {shlex.quote(agent_path)}")
    check_room(host, agent_path, len(bundle.data) + bundle.unpacked_bytes, f"agent {bundle.name} (zip and unpacked)",
               "give the profile an agent_dir on another disk")
    part = posixpath.join(agent_path, "bundle.zip.part")
    with host.sftp.open(part, "wb") as f:
        f.write(bundle.data)
    # Verify on the device, with the device's own hashlib, before anything unpacks it.
    check = ("import hashlib, sys; d = open(sys.argv[1], 'rb').read(); "
             "print(hashlib.sha256(d).hexdigest())")
    got = host.run(f"{shlex.quote(python)} -c {shlex.quote(check)} {shlex.quote(part)}").stdout.strip()
    if got != bundle.sha256:
        host.run(f"rm -f {shlex.quote(part)}", check=False)
        raise DeployError(f"agent bundle arrived corrupted on {host.name}: sha256 {got[:12]}... "
                          f"instead of {bundle.sha256[:12]}...; deploy again", host=host.name)
    unpack = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])"
    host.run(f"{shlex.quote(python)} -c {shlex.quote(unpack)} {shlex.quote(part)} {shlex.quote(agent_path)}"
             f" && rm -f {shlex.quote(part)} && touch {shlex.quote(marker)}")
    return f"pushed agent {bundle.name} ({len(bundle.data) // 1024} KiB, sha256 verified)"


def check_room(host: Host, folder: str, needed_bytes: int, what: str, or_else: str) -> None:
    """A DeployError naming a full disk under ``folder`` on the host, before ``what`` is written there: SFTP says
    only 'Failure' when the disk fills, and leaves the file cut short."""
    free = host.free_bytes(folder)
    if free is not None and free < needed_bytes + DISK_MARGIN_BYTES:  # kB rounded up: a small file read '0 kB needed'
        raise DeployError(f"the disk under {folder} on {host.name} is full for {what}: {free // 1024} kB free, "
                          f"{-(-needed_bytes // 1024)} kB needed; free space there, or {or_else}", host=host.name)


def _altered_files(host: Host, bundle: AgentBundle, agent_path: str, python: str) -> list[str]:
    """Files of the unpacked bundle on the device whose bytes are not the bundle's (or are gone)."""
    with zipfile.ZipFile(io.BytesIO(bundle.data)) as zf:
        want = {n: hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist() if not n.endswith("/")}
    got = remote_digests(host, python, agent_path, sorted(want))
    return sorted(n for n, sha in want.items() if got.get(n) != sha)


def remote_digests(host: Host, python: str, folder: str, names: list[str]) -> dict[str, str]:
    """The sha256 of each of the files ``names`` in ``folder`` on the device that is there, hashed by the device's
    own Python."""
    digest = ("import hashlib, json, os, sys; os.chdir(sys.argv[1]); "
              "print(json.dumps({n: hashlib.sha256(open(n, 'rb').read()).hexdigest() "
              "for n in json.loads(sys.argv[2]) if os.path.isfile(n)}))")
    return json.loads(host.run(f"{shlex.quote(python)} -c {shlex.quote(digest)} {shlex.quote(folder)} "
                               f"{shlex.quote(json.dumps(names))}").stdout)


def _ensure_venv(host: Host, python: str, base: str) -> str:
    venv = posixpath.join(base, "venv")
    if host.exists(posixpath.join(venv, "bin", "python")):
        return "unchanged: venv"
    host.run(f"{shlex.quote(python)} -m venv --system-site-packages {shlex.quote(venv)}", timeout_s=300)
    return f"created venv {venv}"


def _missing_modules(host: Host, venv_python: str, modules: list[str]) -> list[str]:
    check = ("import importlib.util, sys; "
             "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))")
    out = host.run(f"{shlex.quote(venv_python)} -c {shlex.quote(check)} {' '.join(modules)}").stdout
    return out.split()


def profile_builds_from_onnx(runtime: str, options: dict) -> bool:
    """Whether the agent builds each model from its ONNX file on the device: TVM without a prebuilt library."""
    return runtime == "tvm" and not (options.get("library") or options.get("library_dir"))


def wanted_modules(runtime: str, builds_from_onnx: bool = False) -> dict[str, str]:
    """Import name -> distribution of what the agent imports on the device."""
    module, distributions = RUNTIME_MODULES[runtime]
    wanted = {"numpy": "numpy", **({module: distributions[0]} if module else {})}
    return {**wanted, **ONNX_MODULE} if builds_from_onnx else wanted


def _ensure_packages(host: Host, venv_python: str, base: str, wanted: dict[str, str], wheel_dir: Path | None,
                     extra_packages: tuple[str, ...]) -> str:
    missing = _missing_modules(host, venv_python, list(wanted))
    if not missing and not extra_packages:
        return f"unchanged: {', '.join(wanted)} importable"
    to_install = [wanted[m] for m in missing] + list(extra_packages)
    pip = f"{shlex.quote(venv_python)} -m pip install -q"
    if wheel_dir is not None:
        remote_wheels = posixpath.join(base, "wheels")
        host.run(f"mkdir -p {shlex.quote(remote_wheels)}")
        wheels = sorted(Path(wheel_dir).glob("*.whl"))
        if not wheels:
            raise DeployError(f"wheel directory {wheel_dir} has no .whl files", host=host.name)
        for wheel in wheels:
            target = posixpath.join(remote_wheels, wheel.name)
            if not host.exists(target):
                host.put(wheel, target)
        pip += f" --no-index --find-links {shlex.quote(remote_wheels)}"
    try:
        host.run(f"{pip} {' '.join(shlex.quote(p) for p in to_install)}", timeout_s=1800)
    except RemoteCommandError as exc:
        source = f"wheels in {wheel_dir}" if wheel_dir else "the package registry"
        raise DeployError(f"installing {', '.join(to_install)} on {host.name} from {source} failed: "
                          f"{exc.stderr.strip()[-400:]}", host=host.name) from None
    still = _missing_modules(host, venv_python, list(wanted))
    if still:
        raise DeployError(f"{', '.join(still)} still not importable on {host.name} after install",
                          host=host.name)
    return f"installed {', '.join(to_install)}"


def _set_current(host: Host, base: str, name: str) -> str:
    current = posixpath.join(base, "current")
    have = host.run(f"cat {shlex.quote(current)} 2>/dev/null || true").stdout.strip()
    if have == name:
        return "unchanged: current"
    host.run(f"printf '%s\\n' {shlex.quote(name)} > {shlex.quote(current)}")
    return f"current -> {name}"


def agent_base(host: Host, agent_dir: str) -> str:
    """``agent_dir`` with ``~`` expanded on the host."""
    if agent_dir == "~" or agent_dir.startswith("~/"):
        home = host.run('printf %s "$HOME"').stdout.strip()
        return _expand(agent_dir, home)
    return agent_dir


def locate_agent(host: Host, *, agent_dir: str = "~/.hwl", python: str = "python3",
                 use_venv: bool = True) -> tuple[str, str, str]:
    """``(agent_path, agent_python, cache_dir)`` of the agent deployed on ``host``.

    Raises
    ------
    DeployError
        No agent was deployed there (the message says to run ``hwl deploy``).
    """
    base = agent_base(host, agent_dir)
    current = host.run(f"cat {shlex.quote(posixpath.join(base, 'current'))}", check=False).stdout.strip()
    agent_path = posixpath.join(base, "agents", current)
    if not current or not host.exists(posixpath.join(agent_path, ".complete")):
        raise DeployError(f"no agent is deployed on {host.name} under {base}: run `{host.deploy_command}` first",
                          host=host.name)
    agent_python = posixpath.join(base, "venv", "bin", "python") if use_venv else python
    _check_agent_python(host, agent_python, use_venv)
    return agent_path, agent_python, posixpath.join(base, "cache")


def _holds_home(base: str, home: str) -> bool:
    """Whether removing ``base`` removes ``home``: compared as normalised paths, as '~/../pi' or '/home' (the
    home folder, a folder above it) passed a plain comparison with the home folder and '/'."""
    base, home = posixpath.normpath(base), posixpath.normpath(home)
    return base == "/" or home == base or home.startswith(base.rstrip("/") + "/")


# What deploy, its self-test and the agent put in agent_dir: undeploy removes these and nothing else there, as an
# agent_dir may be a folder of the user's own (a USB disk's mount point, where a full SD card sent the agent).
DEPLOYED_ENTRIES = ("agents", "venv", "wheels", "current", "selftest.json", "agent.log", "agent.log.1",
                    "measure.lock")
# The model cache ('cache') may be a folder of the user's own there too, which the agent shares: only hwl's files
# go (models and TVM libraries named by their sha256, the agent's job marks), then each folder once empty.
_REMOVE_CACHED = """cd {cache} 2>/dev/null || exit 0
for f in *.onnx *.onnx.part tvm/*.so tvm/*.so.sha256; do
    stem=${{f##*/}}; stem=${{stem%%.*}}
    case $stem in *[!0-9a-f]*) continue;; esac
    [ ${{#stem}} -eq 64 ] && rm -f "$f"
done
rm -f jobs-in-flight/*.job jobs-in-flight/*.new
rmdir tvm jobs-in-flight 2>/dev/null; cd .. && rmdir {cache} 2>/dev/null; exit 0"""


def undeploy(host: Host, *, agent_dir: str = "~/.hwl", python: str = "python3") -> str:
    """Remove everything deploy put on the host, and ``agent_dir`` itself once nothing else is left in it."""
    facts = probe(host, python)
    base = _expand(agent_dir, facts.home)
    if _holds_home(base, facts.home):
        raise DeployError(f"refusing to remove {base!r} on {host.name}: it is the home folder {facts.home} or holds "
                          "it; agent_dir must be a subdirectory", host=host.name)
    if not host.run(f"test -e {shlex.quote(base)}", check=False).ok:
        return f"nothing to remove: {base} does not exist"  # a second undeploy said 'removed' again
    # `rm -rf agent_dir` took every file of the user's that was there too
    host.run("rm -rf " + " ".join(shlex.quote(posixpath.join(base, name)) for name in DEPLOYED_ENTRIES))
    host.run("sh -c " + shlex.quote(_REMOVE_CACHED.format(cache=shlex.quote(posixpath.join(base, "cache")))))
    if host.run(f"rmdir {shlex.quote(base)}", check=False).ok:
        return f"removed {base}"
    others = len(host.run(f"ls -A {shlex.quote(base)}", check=False).stdout.splitlines())
    return f"removed hwl's files from {base} and kept the folder, which holds {count(others, 'entry', 'entries')} " \
           "hwl did not put there"
