"""Device profiles: ``device_profiles/*.toml`` parsed into frozen dataclasses.

Every check happens at load time, and every error names the file, the key and the valid
choices. A device is named by its profile name (searched among the profiles shipped with hwl,
then in the user directory ``$HWL_PROFILE_DIR`` or ``~/.config/hwl/profiles``) or by a path to
a ``.toml`` file.

A profile looks like this::

    name = "local-ort-1t"
    device_class = "cpu"              # cpu | gpu | mobile | embedded_cpu | fpga | asic
    thermal_domain = "local-cpu"      # devices sharing it never time at the same moment

    [host]
    name = "local"                    # Ray custom resource host:<name> pins the device actor
    transport = "local"               # local | ssh | command
    # ssh only:
    # address = "192.168.1.42"; port = 22; user = "pi"; key = "~/.ssh/hwl_lab"
    # jump = "me@gateway.lab:22"      # reached through this gateway (a list for a chain), as ssh -J
    # (address may be a Host alias of ~/.ssh/config: its HostName, Port, User, IdentityFile, ProxyJump fill the rest)
    # known_hosts = "~/.ssh/known_hosts"; python = "python3"; machine = "aarch64"
    # agent_dir = "~/.hwl"; use_venv = true; wheel_dir = "wheels/aarch64"; cache_quota_mb = 2048
    # command only (the device is reached through a host-side tool; runtime.kind = "command"):
    # push = "adb push {model} /data/local/tmp/hwl/{sha256}.onnx"
    # check = "adb shell 'test \\"$(sha256sum /data/local/tmp/hwl/{sha256}.onnx | cut -c1-64)\\" = {sha256}'"
    # reconnect_timeout_s = 300       # ssh/command: how long a lost device is retried
    # recover = "uhubctl -l 1-1 -p 2 -a cycle"   # optional: run here before quarantining the device

    [runtime]
    kind = "onnxruntime"              # onnxruntime | tvm | torch | command
    threads = 1
    cores = [1]                       # core set the measurement is pinned to
    [runtime.options]                 # runtime settings, checked per runtime
    graph_optimization = "all"

    [workload]
    batch_size = 1
    dataset = "cifar10"               # optional: default is the space's (cifar10 / cifar100)

    [measurement]
    profile = "quick"                 # quick | standard
    cooldown_s = 0.2
    max_temp_c = 85.0                 # optional temperature gate
    [measurement.policy]              # optional overrides of the agent's TimingPolicy fields
    repeats = 3
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from agents.timing import MAX_COOLDOWN_S
from harness.errors import ProfileError
from harness.paths import why_not_a_file

DEVICE_CLASSES = ("cpu", "gpu", "mobile", "embedded_cpu", "fpga", "asic")
TRANSPORTS = ("local", "ssh", "command")
RUNTIMES = ("onnxruntime", "tvm", "torch", "command")
MEASUREMENT_PROFILES = ("quick", "standard")
# Datasets the space builders know (which space accepts which is checked when a campaign is
# planned, see spaces.cost.dataset_of); the input size follows from the dataset.
DATASETS = ("cifar10", "cifar100", "ImageNet16-120", "imagenet")
# Runtime options as the agent's adapters name them (agents/runtimes/*): passed through as
# ``Measure.options``. Name -> (python type, allowed values or None).
RUNTIME_OPTIONS: dict[str, dict[str, tuple[type, tuple | None]]] = {
    "onnxruntime": {
        "provider": (str, ("cpu", "cuda")),
        "graph_optimization": (str, ("disable", "basic", "extended", "all")),
        "spinning": (bool, None),
        "inter_op_threads": (int, None),
        "scope": (str, ("compute", "end_to_end")),
    },
    "tvm": {"target": (str, None), "tuned": (bool, None), "opt_level": (int, (0, 1, 2, 3)), "library_dir": (str, None),
            "schedule": (str, ("none", "dlight", "ms-sample"))},  # agents.runtimes.tvm_vm.SCHEDULES
    "torch": {"device": (str, ("cpu", "cuda")), "scope": (str, ("compute", "end_to_end")), "cuda_graph": (bool, None)},
    "command": {"command": (str, None), "regex": (str, None), "json_path": (str, None),
                "unit": (str, ("ns", "us", "ms", "s")), "warmup_runs": (int, None), "version": (str, None)},
}
_TOP_KEYS = ("name", "device_class", "description", "thermal_domain", "host", "runtime", "workload",
             "measurement")
_SECTION_KEYS = {
    "host": ("name", "transport", "address", "port", "user", "key", "jump", "known_hosts", "python", "machine",
             "agent_dir", "use_venv", "wheel_dir", "cache_quota_mb", "push", "check", "reconnect_timeout_s",
             "recover"),
    "runtime": ("kind", "threads", "cores", "options"),
    "workload": ("batch_size", "dataset"),
    "measurement": ("profile", "cooldown_s", "max_temp_c", "policy"),
}
# The placeholders each command template is filled with (harness.transport.command fills the push and check
# templates, agents.runtimes.command the runtime's). The tool would get any other {name} as written.
TEMPLATE_PLACEHOLDERS = {"host.push": ("model", "sha256"), "host.check": ("model", "sha256"),
                         "runtime.options.command": ("model", "sha256", "threads", "cores", "batch")}
# What a placeholder looks like: a name in braces, not a shell's ${NAME} nor code such as {'a': 1}.
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_]\w*)\}")
USER_PROFILE_DIR_ENV = "HWL_PROFILE_DIR"
# Host keys that say how to reach a device, not what is measured on it. A campaign's devices
# are identified without them (and without the description), so a device that came back at
# another address, or behind a new key, goes on with the same campaign (DeviceProfile.identity).
REACH_KEYS = ("address", "port", "user", "key", "jump", "known_hosts", "cache_quota_mb", "push", "check",
              "reconnect_timeout_s", "recover")


@dataclass(frozen=True)
class HostSpec:
    """Where a device lives and how the coordinator reaches its agent."""

    name: str
    transport: str = "local"
    address: str | None = None
    port: int | None = None
    user: str | None = None
    # ssh: key authentication only; host keys checked against known_hosts.
    key: str | None = None
    # ssh: the gateway(s) the device is reached through, "[user@]host[:port]" comma-separated as ssh's -J
    jump: str | None = None
    known_hosts: str | None = None
    python: str = "python3"
    machine: str | None = None          # expected `uname -m` (checked by deploy)
    agent_dir: str = "~/.hwl"
    use_venv: bool = True
    wheel_dir: str | None = None        # install the runtime from here (devices without internet)
    cache_quota_mb: int = 2048
    # command: templates run on this host ({model}, {sha256} are filled in).
    push: str | None = None
    check: str | None = None
    reconnect_timeout_s: float = 300.0
    # Measurement-method rule 23: the last step before quarantine (a reboot, a power cycle), run
    # where the device's actor runs, without a shell; None: quarantine at once.
    recover: str | None = None

    @property
    def resource(self) -> str:
        """Ray custom resource that pins this host's device actors."""
        return f"host:{self.name}"


@dataclass(frozen=True)
class RuntimeSpec:
    """Runtime, threads, core set and runtime options (a sorted tuple of pairs, hashable)."""

    kind: str
    threads: int = 1
    cores: tuple[int, ...] | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class DeviceProfile:
    """One device under test, as a campaign sees it.

    Parameters
    ----------
    name : str
        Device name (``device:<name>`` is its Ray actor). Batch size is part of the device
        identity, so profiles with different batch sizes carry different names.
    device_class : str
        One of :data:`DEVICE_CLASSES`.
    host, runtime : HostSpec, RuntimeSpec
    batch_size : int
    dataset : str or None
        One of :data:`DATASETS` (fixes the input size); None: the search space's default.
    measurement : str
        ``quick`` or ``standard`` (the agent's timing policies).
    cooldown_s : float
        Pause after each model.
    max_temp_c : float or None
        Temperature gate; None when the device has no sensor or no gate is wanted.
    policy : tuple of (str, float)
        Overrides of ``agents.timing.TimingPolicy`` fields (sorted pairs).
    thermal_domain : str
        Devices on one host sharing this never time at the same moment.
    source : str
        File the profile was read from.
    """

    name: str
    device_class: str
    host: HostSpec
    runtime: RuntimeSpec
    batch_size: int = 1
    dataset: str | None = None
    measurement: str = "quick"
    cooldown_s: float = 0.2
    max_temp_c: float | None = None
    policy: tuple[tuple[str, float], ...] = ()
    thermal_domain: str = ""
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def lock_keys(self) -> tuple[str, ...]:
        """Names of the exclusive locks a measurement holds: its thermal domain and its cores."""
        keys = {f"{self.host.name}.thermal.{self.thermal_domain}"}
        keys.update(f"{self.host.name}.core.{c}" for c in (self.runtime.cores or ()))
        return tuple(sorted(keys))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["runtime"]["options"] = dict(self.runtime.options)
        d["policy"] = dict(self.policy)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def identity(self) -> dict:
        """What makes two measurements of this device comparable: :meth:`to_dict` without the
        source file, the description and the host's :data:`REACH_KEYS`."""
        d = self.to_dict()
        for key in ("source", "description"):
            d.pop(key)
        for key in REACH_KEYS:
            d["host"].pop(key)
        return d

    def reach_changes(self, other: "DeviceProfile") -> dict[str, tuple]:
        """``host.<key>`` -> (this value, ``other``'s) for each of :data:`REACH_KEYS` that differs."""
        return {f"host.{k}": (getattr(self.host, k), getattr(other.host, k)) for k in REACH_KEYS
                if getattr(self.host, k) != getattr(other.host, k)}

    def stored_json(self) -> str:
        """:meth:`to_json` with the source file's absolute path, as a campaign stores it: a resume run in another
        folder (the line `hwl campaign status` prints, with the store's absolute path) read 'pi-1.toml' there,
        found nothing and went on with the stored profile, ignoring the user's edit (a new address)."""
        source = os.path.abspath(self.source) if self.source else self.source
        return dataclasses.replace(self, source=source).to_json()

    def with_reach_of(self, other: "DeviceProfile") -> "DeviceProfile":
        """This profile, reached as ``other`` says (its :data:`REACH_KEYS`, description and source)."""
        host = dataclasses.replace(self.host, **{k: getattr(other.host, k) for k in REACH_KEYS})
        return dataclasses.replace(self, host=host, description=other.description, source=other.source)

    def host_commands(self) -> dict[str, str]:
        """Key -> template of each command this profile starts on its host's machine (the one whose Ray node
        runs the device's actor): ``host.push``, ``host.check``, ``host.recover``, and the command runtime's
        tool, unless an ssh device runs that on itself."""
        commands = {f"host.{key}": getattr(self.host, key) for key in ("push", "check", "recover")}
        if self.runtime.kind == "command" and self.host.transport != "ssh":
            commands["runtime.options.command"] = self.runtime.options_dict().get("command")
        return {key: template for key, template in commands.items() if template}

    def agent_policy(self) -> dict:
        """The ``agents.timing.TimingPolicy`` overrides each measure request carries: the profile's
        ``policy`` table, its cooldown and its temperature limit (rule 6: the agent waits on the
        device's own sensors, so the limit needs a transport whose agent runs there)."""
        policy = dict(self.policy)
        policy.setdefault("cooldown_s", self.cooldown_s)
        if self.max_temp_c is not None:
            policy.setdefault("max_temp_c", self.max_temp_c)
        return policy

    def with_measurement(self, measurement: str | None) -> "DeviceProfile":
        """A copy with the measurement profile replaced (the campaign's ``--profile``)."""
        if measurement is None or measurement == self.measurement:
            return self
        check_measurement(measurement)
        return dataclasses.replace(self, measurement=measurement)


def check_measurement(measurement: str) -> None:
    """Refuse a name that is none of :data:`MEASUREMENT_PROFILES` (a campaign's ``--profile``)."""
    if measurement not in MEASUREMENT_PROFILES:
        raise ProfileError(f"unknown measurement profile {measurement!r}; valid: {', '.join(MEASUREMENT_PROFILES)}")


def shipped_dir() -> Path:
    return Path(str(resources.files("device_profiles")))


def user_dir() -> Path:
    return Path(os.environ.get(USER_PROFILE_DIR_ENV) or Path.home() / ".config" / "hwl" / "profiles")


def available_profiles() -> dict[str, Path]:
    """Profile name -> file, shipped first, then the user directory (a user file wins)."""
    found: dict[str, Path] = {}
    for folder in (shipped_dir(), user_dir()):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                if not path.name.startswith("."):  # a killed write's partial file, an editor's lock: not profiles
                    found[path.stem] = path
    return found


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """Profile named by ``name_or_path``: a profile name or a path to a ``.toml`` file.

    Raises
    ------
    ProfileError
        Unknown name (the message lists the known ones), unreadable or malformed file.
    """
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    known = available_profiles()
    if text.endswith(".toml") or os.sep in text:
        if why := why_not_a_file(path):
            raise ProfileError(f"device profile file {path} {why}{_name_hint(path, known)}{_file_hint(path)}")
        return parse_profile_file(path)
    if text not in known:
        raise ProfileError(f"unknown device {text!r}: no profile of that name in {shipped_dir()} or "
                           f"{user_dir()}; known devices: {', '.join(sorted(known)) or '(none)'}"
                           f"{_file_hint(path)}{_example_hint(text)}")
    profile = parse_profile_file(known[text])
    if profile.name != text:
        raise ProfileError(f"{known[text]}: key 'name' is {profile.name!r} but the file is named "
                           f"{text!r}.toml; make them agree")
    return profile


def _name_hint(path: Path, known: dict[str, Path]) -> str:
    """A missing ``NAME.toml`` that is a known profile's name: the user gave a name as a file."""
    return f" (a profile named {path.stem!r} is known: give its name alone)" if path.stem in known else ""


def _example_hint(name: str) -> str:
    """An unknown name that is one of the shipped examples' (README points to them), by file or by its ``name``
    (the phone's example is pixel7-adb.toml, of device 'pixel7'): how to make it a profile hwl finds."""
    for example in sorted((shipped_dir() / "examples").glob("*.toml")):
        try:
            device = tomllib.loads(example.read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError):
            continue
        if name in (example.stem, device) and isinstance(device, str):
            return f" ({example} is an example: copy it to {user_dir() / f'{device}.toml'} and edit it for your device)"
    return ""


def _file_hint(path: Path) -> str:
    """An unknown name with a ``NAME.toml`` beside it: the user gave a file as a name."""
    beside = path.with_name(path.name + ".toml") if path.name else None
    return f" (there is a profile file {beside}: give that)" if beside and beside.is_file() else ""


def load_profiles(names: list[str] | str) -> list[DeviceProfile]:
    """Several devices (a list or a comma-separated string); duplicate names are refused."""
    if isinstance(names, str):
        names = [n for n in (t.strip() for t in names.split(",")) if n]
    if not names:
        raise ProfileError("no device given; name at least one profile (known: "
                           f"{', '.join(sorted(available_profiles()))})")
    profiles = [load_profile(n) for n in names]
    seen: set[str] = set()
    for p in profiles:
        if p.name in seen:
            raise ProfileError(f"device {p.name!r} is named twice")
        seen.add(p.name)
    return profiles


def parse_profile_file(path: Path) -> DeviceProfile:
    try:
        # utf-8-sig: a byte-order mark (Windows' Notepad writes one) was "Invalid statement (at line 1, column 1)"
        data = tomllib.loads(Path(path).read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not a text (UTF-8) file: {exc}") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read device profile: {exc}") from None
    return parse_profile(data, source=str(path))


def parse_profile(data: dict, *, source: str = "<profile>") -> DeviceProfile:
    """Check a profile's TOML table and build the dataclass; errors name ``source`` and the key."""
    c = _Checker(source)
    c.only_keys(data, _TOP_KEYS, "")
    name = c.string(data, "name", required=True)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ProfileError(f"{source}: key 'name' = {name!r} may contain only letters, digits, '-', '_', '.'")
    device_class = c.choice(data, "device_class", DEVICE_CLASSES, required=True)

    host = _host(c, c.section(data, "host"))

    rt = c.section(data, "runtime", required=True)
    kind = c.choice(rt, "kind", RUNTIMES, "runtime", required=True)
    threads = c.integer(rt, "threads", "runtime", default=1, minimum=1)
    cores = rt.get("cores")
    if cores is not None:
        if (not isinstance(cores, list) or not cores
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in cores)):
            raise ProfileError(f"{source}: key 'runtime.cores' must be a non-empty list of core "
                               f"numbers (>= 0), got {cores!r}")
        if len(set(cores)) != len(cores):
            raise ProfileError(f"{source}: key 'runtime.cores' lists a core twice: {cores!r}")
        from agents.protocol import agent_runs_threads  # the protocol module, only where a profile pins cores

        if threads > len(cores) and agent_runs_threads(kind):  # a command tool's threads may be a phone's
            raise ProfileError(f"{source}: key 'runtime.threads' = {threads} exceeds the {len(cores)} "
                               f"core(s) of 'runtime.cores' {cores}; pin at least one core per thread")
        cores = tuple(sorted(cores))
    options = _runtime_options(c, kind, rt.get("options", {}))
    if kind == "tvm":
        _check_tvm_libraries(source, threads, dict(options))
    if host.transport == "command" and kind != "command":
        raise ProfileError(f"{source}: transport 'command' measures through the host-side tool, so "
                           f"'runtime.kind' must be 'command', got {kind!r}")

    wl = c.section(data, "workload")
    batch_size = c.integer(wl, "batch_size", "workload", default=1, minimum=1)
    dataset = c.choice(wl, "dataset", DATASETS, "workload", default=None)

    ms = c.section(data, "measurement")
    measurement = c.choice(ms, "profile", MEASUREMENT_PROFILES, "measurement", default="quick")
    cooldown_s = c.number(ms, "cooldown_s", "measurement", default=0.2, minimum=0.0, maximum=MAX_COOLDOWN_S)
    max_temp_c = c.number(ms, "max_temp_c", "measurement", default=None, minimum=1.0)
    if max_temp_c is not None and host.transport == "command":
        raise ProfileError(f"{source}: key 'measurement.max_temp_c' needs the agent on the device to read its "
                           "sensors, but a 'command' transport's agent runs on the host PC; leave it out")
    policy = _policy(c, ms.get("policy", {}))

    return DeviceProfile(
        name=name, device_class=device_class, host=host,
        runtime=RuntimeSpec(kind=kind, threads=threads, cores=cores, options=options),
        batch_size=batch_size, dataset=dataset, measurement=measurement, cooldown_s=cooldown_s,
        max_temp_c=max_temp_c, policy=policy,
        thermal_domain=c.string(data, "thermal_domain", default=host.name),
        description=c.string(data, "description", default=""), source=source,
    )


_SSH_ONLY = ("key", "jump", "known_hosts", "python", "machine", "agent_dir", "use_venv", "wheel_dir", "cache_quota_mb")
_COMMAND_ONLY = ("push", "check")


def _check_tvm_libraries(source: str, threads: int, options: dict) -> None:
    """What the tvm agent would refuse for every model of a campaign, refused when the profile loads."""
    library_dir = options.get("library_dir")
    if library_dir is not None and not os.path.isabs(library_dir):
        raise ProfileError(f"{source}: key 'runtime.options.library_dir' = {library_dir!r} must be an absolute path "
                           "on the device (the folder scripts/build_tvm_libraries filled, copied there)")
    if options.get("tuned") and library_dir is None:
        raise ProfileError(f"{source}: key 'runtime.options.tuned' = true needs 'runtime.options.library_dir': the "
                           "agent never tunes; tuned libraries are built on a build host with "
                           "scripts/build_tvm_libraries --tune-trials and copied to the device")
    schedule = options.get("schedule", "none")
    if schedule != "none" and library_dir is not None:
        raise ProfileError(f"{source}: key 'runtime.options.schedule' applies to the agent's own build, not to the "
                           "libraries of 'runtime.options.library_dir' (scripts/build_tvm_libraries --schedule)")
    if schedule == "ms-sample" and "num-cores" not in options.get("target", ""):
        raise ProfileError(f"{source}: key 'runtime.options.schedule' = 'ms-sample' needs the device's core count "
                           "in 'runtime.options.target', e.g. '{\"kind\": \"llvm\", \"num-cores\": 4}'")
    if threads > 1 and not options.get("tuned") and schedule == "none":
        raise ProfileError(f"{source}: key 'runtime.threads' = {threads}, but runtime 'tvm' untuned runs on one "
                           "thread (TVM's default CPU build has no parallel loop), so its records would say "
                           f"{threads} threads for one; set threads = 1 with one core in 'runtime.cores', build "
                           "with parallel loops (schedule = \"ms-sample\") or measure MetaSchedule-tuned "
                           "libraries (tuned = true with 'runtime.options.library_dir', see "
                           "scripts/build_tvm_libraries)")


def _host(c: "_Checker", host_t: dict) -> HostSpec:
    transport = c.choice(host_t, "transport", TRANSPORTS, "host", default="local")
    for keys, owner in ((_SSH_ONLY, "ssh"), (_COMMAND_ONLY, "command")):
        stray = [k for k in keys if k in host_t]
        if stray and transport != owner:
            raise ProfileError(f"{c.source}: key 'host.{stray[0]}' only applies to transport {owner!r}, "
                               f"but 'host.transport' is {transport!r}")
    use_venv = host_t.get("use_venv", True)
    if not isinstance(use_venv, bool):
        raise ProfileError(f"{c.source}: key 'host.use_venv' must be true or false, got {use_venv!r}")
    return HostSpec(
        name=c.string(host_t, "name", "host", default="local"),
        transport=transport,
        **_reach(c, host_t, ssh=transport == "ssh"),
        known_hosts=c.string(host_t, "known_hosts", "host", default=None),
        python=c.string(host_t, "python", "host", default="python3"),
        machine=c.string(host_t, "machine", "host", default=None),
        agent_dir=c.string(host_t, "agent_dir", "host", default="~/.hwl"),
        use_venv=use_venv,
        wheel_dir=c.string(host_t, "wheel_dir", "host", default=None),
        cache_quota_mb=c.integer(host_t, "cache_quota_mb", "host", default=2048, minimum=1),
        push=_command(c, host_t, "push"),
        check=_command(c, host_t, "check"),
        reconnect_timeout_s=c.number(host_t, "reconnect_timeout_s", "host", default=300.0, minimum=0.0),
        recover=_command(c, host_t, "recover"),
    )


def _reach(c: "_Checker", host_t: dict, *, ssh: bool) -> dict:
    """``address``, ``port``, ``user``, ``key`` and ``jump``: the profile's, and for an ssh device, where it leaves
    one out, what ~/.ssh/config gives its address (a ``Host`` alias's HostName replaces it), as ssh takes them."""
    port = c.integer(host_t, "port", "host", default=None, minimum=1)
    if port is not None and port > 65535:
        raise ProfileError(f"{c.source}: key 'host.port' must be a TCP port 1..65535, got {port}")
    reach = {"address": _address(c, host_t, required=ssh), "port": port, "user": c.string(host_t, "user", "host"),
             "key": c.string(host_t, "key", "host"), "jump": _jump(c, host_t)}
    if not ssh:
        return reach
    from harness.ssh_config import SSH_CONFIG, gateways, refuse_proxy_command, settle

    alias, config = reach["address"], SSH_CONFIG.expanduser()
    device = settle(alias, user=reach["user"], port=port, key=reach["key"])
    if reach["jump"] is None:
        refuse_proxy_command(device, "", "give the profile's [host] a jump (or the config a ProxyJump)",
                             source=c.source)
        if device.proxy_jump:
            where = _Checker(f"{c.source} (ProxyJump of {alias!r} in {config})")
            reach["jump"] = _jump(where, {"jump": device.proxy_jump})
    for key, config_key in (("user", "User"), ("key", "IdentityFile")):
        if not getattr(device, key):
            raise ProfileError(f"{c.source}: missing key 'host.{key}' (and {config} gives {alias!r} no "
                               f"{config_key})")
    # the config is read for the gateways now too: what it refuses, refused at load
    gateways(reach["jump"], key=device.key, behind=None if host_t.get("jump") else alias)
    return {**reach, "address": device.address, "port": device.port, "user": device.user, "key": device.key}


def key_named_by(profile: DeviceProfile) -> str | None:
    """Where the device's key file is written, for the line about a missing one: the profile file's ``host.key``,
    or, where the profile gives none, the IdentityFile ~/.ssh/config gives its address (read when it was loaded)."""
    from harness import ssh_config

    try:
        host = tomllib.loads(Path(profile.source).read_text(encoding="utf-8-sig")).get("host", {})
    except (OSError, ValueError):  # no file (a profile built in code), or one changed since it was loaded
        return None
    if "key" in host:
        return f"key 'host.key' of {profile.source}"
    return f"the IdentityFile {ssh_config.SSH_CONFIG} gives {host.get('address')!r}"


def _address(c: "_Checker", host_t: dict, *, required: bool) -> str | None:
    """``host.address``, a host name or IP alone: ssh's own spellings (``pi@host``, ``host:2222``, ``ssh://host``)
    reached the resolver whole and came back as 'no host has that name' at the first deploy."""
    address = c.string(host_t, "address", "host", required=required, default=None)
    if address is not None and (why := _why_not_an_address(address)):
        raise ProfileError(f"{c.source}: key 'host.address' = {address!r} {why}")
    return address


def _jump(c: "_Checker", host_t: dict) -> str | None:
    """``host.jump``: one gateway ``"[user@]host[:port]"`` or a list of them (the first reached first), kept as
    ssh's -J spells a chain: comma-separated."""
    value = host_t.get("jump")
    if value is None:
        return None
    from harness.ssh_config import jump_hop  # here: it imports paramiko, 20 MiB a local profile has no use for

    hops = value if isinstance(value, list) else [value]
    if not hops or not all(isinstance(hop, str) for hop in hops):
        raise ProfileError(f"{c.source}: key 'host.jump' must be a string \"[user@]host[:port]\" or a list of them, "
                           f"got {value!r}")
    for hop in (h for text in hops for h in text.split(",")):
        try:
            jump_hop(hop)
        except ValueError as exc:
            raise ProfileError(f"{c.source}: key 'host.jump' = {hop!r} {exc}") from None
    return ",".join(h.strip() for text in hops for h in text.split(","))


def _why_not_an_address(address: str) -> str | None:
    if "://" in address:
        return "is a URL: give the host name or IP alone ('host.user' and 'host.port' are keys of their own)"
    if "@" in address:
        user, host = address.rsplit("@", 1)
        return f'holds a user: write user = "{user}" and address = "{host}"'
    host, colon, port = address.rpartition(":")
    if colon and port.isdigit() and (":" not in host or host.startswith("[")):  # not an IPv6 address's last group
        return f'holds a port: write address = "{host.strip("[]")}" and port = {port}'
    if address.startswith("["):
        return "is not a host name or IP address (an IPv6 address goes without brackets)"
    if not address or any(ch.isspace() for ch in address):
        return "is not a host name or IP address"
    return None


def _command(c: "_Checker", table: dict, key: str, section: str = "host") -> str | None:
    """A command line run without a shell: it must split into words (balanced quotes), and a template's
    ``{names}`` must be its placeholders, or a typo (``{modle}``) reached the tool as written at every job."""
    text = c.string(table, key, section, default=None)
    if text is None:
        return None
    dotted = f"{section}.{key}"
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ProfileError(f"{c.source}: key '{dotted}' is not a command line ({exc}): {text!r}") from None
    if not words:
        raise ProfileError(f"{c.source}: key '{dotted}' is empty; leave it out for no command")
    known = TEMPLATE_PLACEHOLDERS.get(dotted)
    if known is not None and (why := unknown_placeholders(words, known)):
        raise ProfileError(f"{c.source}: key '{dotted}' {why}")
    if known is not None:
        from agents.command_template import build_argv
        from agents.errors import BadRequest

        try:  # a placeholder quoted in a shell's script: refused here, not at every job (agents.command_template)
            build_argv(words, dict.fromkeys(known, ""))
        except BadRequest as exc:
            raise ProfileError(f"{c.source}: key '{dotted}': {exc}") from None
    return text


def unknown_placeholders(words: list[str], known: tuple[str, ...]) -> str | None:
    """What is wrong with a template's ``{names}`` that are not among ``known`` (None when all are): the tool
    would get a typo such as ``{modle}`` as written."""
    unknown = sorted({name for word in words for name in _PLACEHOLDER.findall(word)} - set(known))
    if not unknown:
        return None
    return (f"names unknown placeholder(s) {', '.join('{' + name + '}' for name in unknown)}; known: "
            f"{', '.join('{' + name + '}' for name in known)} (braces around any other name are read as a "
            "placeholder: put spaces inside them, '{ x }', to pass them to the tool)")


def _policy(c: "_Checker", table: Any) -> tuple[tuple[str, float], ...]:
    from agents.errors import BadRequest
    from agents.timing import TimingPolicy  # the agent owns the timing fields

    if not isinstance(table, dict):
        raise ProfileError(f"{c.source}: [measurement.policy] must be a table, got {table!r}")
    valid = sorted(f.name for f in dataclasses.fields(TimingPolicy) if f.name != "name")
    out = []
    for key, value in table.items():
        if key not in valid:
            raise ProfileError(f"{c.source}: key 'measurement.policy.{key}' is not a timing policy field; "
                               f"valid: {', '.join(valid)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ProfileError(f"{c.source}: key 'measurement.policy.{key}' must be a finite number >= 0, "
                               f"got {value!r}")
        out.append((key, value))
    try:
        TimingPolicy(**dict(out))  # whole numbers for counts, timeouts above 0: the agent's own checks
    except BadRequest as exc:
        raise ProfileError(f"{c.source}: [measurement.policy]: {exc}") from None
    return tuple(sorted(out))


def _runtime_options(c: "_Checker", kind: str, options: Any) -> tuple[tuple[str, Any], ...]:
    from agents.runtimes.base import COUNT_OPTION_MINIMUM  # the agent owns the runtimes' options

    if not isinstance(options, dict):
        raise ProfileError(f"{c.source}: [runtime.options] must be a table, got {options!r}")
    allowed = RUNTIME_OPTIONS[kind]
    out = []
    for key, value in options.items():
        if key not in allowed:
            raise ProfileError(f"{c.source}: key 'runtime.options.{key}' is not an option of runtime "
                               f"{kind!r}; valid: {', '.join(allowed)}")
        typ, choices = allowed[key]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ProfileError(f"{c.source}: key 'runtime.options.{key}' must be {typ.__name__}, "
                               f"got {value!r}")
        if choices is not None and value not in choices:
            raise ProfileError(f"{c.source}: key 'runtime.options.{key}' = {value!r} is not valid; valid: "
                               f"{', '.join(map(str, choices))}")
        if value < COUNT_OPTION_MINIMUM.get(key, value):  # the agent's own minimum, checked at load
            raise ProfileError(f"{c.source}: key 'runtime.options.{key}' must be >= {COUNT_OPTION_MINIMUM[key]}, "
                               f"got {value}")
        out.append((key, value))
    if kind == "command" and "command" not in options:
        raise ProfileError(f"{c.source}: runtime 'command' needs key 'runtime.options.command' "
                           "(the command template)")
    if kind == "command":
        _command(c, options, "command", "runtime.options")
    if kind == "command" and len({"regex", "json_path"} & set(options)) != 1:
        raise ProfileError(f"{c.source}: runtime 'command' needs exactly one of 'runtime.options.regex' "
                           "or 'runtime.options.json_path' to read the latency")
    if kind == "torch" and options.get("cuda_graph") and (options.get("device") != "cuda"
                                                          or options.get("scope", "compute") != "compute"):
        raise ProfileError(f"{c.source}: key 'runtime.options.cuda_graph' = true needs device = \"cuda\" and "
                           "scope = \"compute\" (a CUDA graph holds GPU work only)")
    if isinstance(options.get("regex"), str):
        try:
            re.compile(options["regex"])
        except re.error as exc:  # else every job of the device would fail on it
            raise ProfileError(f"{c.source}: key 'runtime.options.regex' = {options['regex']!r} does not "
                               f"compile: {exc}") from None
    return tuple(sorted(out))


class _Checker:
    """Typed look-ups into one TOML table, with errors naming the file and the dotted key."""

    def __init__(self, source: str):
        self.source = source

    def _key(self, key: str, section: str) -> str:
        return f"{section}.{key}" if section else key

    def only_keys(self, table: dict, allowed: tuple[str, ...], section: str) -> None:
        for key in table:
            if key not in allowed:
                where = f"[{section}]" if section else "the top level"
                raise ProfileError(f"{self.source}: unknown key {self._key(key, section)!r} at {where}; "
                                   f"valid keys: {', '.join(allowed)}")

    def section(self, data: dict, name: str, required: bool = False) -> dict:
        if name not in data:
            if required:
                raise ProfileError(f"{self.source}: missing section [{name}] (keys: "
                                   f"{', '.join(_SECTION_KEYS[name])})")
            return {}
        table = data[name]
        if not isinstance(table, dict):
            raise ProfileError(f"{self.source}: key {name!r} must be a table [{name}], got {table!r}")
        self.only_keys(table, _SECTION_KEYS[name], name)
        return table

    def _get(self, table, key, section, required, default):
        if key not in table:
            if required:
                raise ProfileError(f"{self.source}: missing key {self._key(key, section)!r}")
            return False, default
        return True, table[key]

    def string(self, table, key, section="", *, required=False, default=None):
        found, value = self._get(table, key, section, required, default)
        if found and (not isinstance(value, str) or not value.strip() and required):
            raise ProfileError(f"{self.source}: key {self._key(key, section)!r} must be a non-empty "
                               f"string, got {value!r}")
        return value

    def choice(self, table, key, choices, section="", *, required=False, default=None):
        found, value = self._get(table, key, section, required, default)
        if found and value not in choices:
            raise ProfileError(f"{self.source}: key {self._key(key, section)!r} = {value!r} is not valid; "
                               f"valid: {', '.join(choices)}")
        return value

    def integer(self, table, key, section="", *, required=False, default=None, minimum=None):
        found, value = self._get(table, key, section, required, default)
        if found:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ProfileError(f"{self.source}: key {self._key(key, section)!r} must be an integer, "
                                   f"got {value!r}")
            if minimum is not None and value < minimum:
                raise ProfileError(f"{self.source}: key {self._key(key, section)!r} must be >= {minimum}, "
                                   f"got {value}")
        return value

    def number(self, table, key, section="", *, required=False, default=None, minimum=None, maximum=None):
        found, value = self._get(table, key, section, required, default)
        if found:
            # TOML has nan and inf: a nan cooldown killed the device's actor at its first model
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ProfileError(f"{self.source}: key {self._key(key, section)!r} must be a finite number, "
                                   f"got {value!r}")
            if minimum is not None and value < minimum:
                raise ProfileError(f"{self.source}: key {self._key(key, section)!r} must be >= {minimum}, "
                                   f"got {value}")
            if maximum is not None and value > maximum:
                raise ProfileError(f"{self.source}: key {self._key(key, section)!r} must be at most {maximum:g}, "
                                   f"got {value}")
            value = float(value)
        return value


def profile_from_dict(d: dict) -> DeviceProfile:
    """Inverse of :meth:`DeviceProfile.to_dict` (profiles stored with a campaign)."""
    rt = dict(d["runtime"])
    rt["cores"] = tuple(rt["cores"]) if rt.get("cores") is not None else None
    rt["options"] = tuple(sorted(rt.get("options", {}).items()))
    fields = {k: v for k, v in d.items() if k not in ("host", "runtime", "policy")}
    return DeviceProfile(host=HostSpec(**d["host"]), runtime=RuntimeSpec(**rt),
                         policy=tuple(sorted(d.get("policy", {}).items())), **fields)
