"""`hwl profile new | list | show`: device profiles from flags, a starting point a user edits."""
from __future__ import annotations

import sys
from pathlib import Path

from harness.cli.common import messages_to, user_path
from harness.errors import UserError
from harness.paths import check_writable, written_whole


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("profile", help="write, list and show device profiles")
    sub = p.add_subparsers(dest="profile_command", required=True)

    new = sub.add_parser("new", help="write a valid profile from flags")
    new.add_argument("name")
    new.add_argument("--transport", choices=["local", "ssh", "command"], default="local",
                     help="how hwl reaches the device's agent (default local)")
    new.add_argument("--device-class", default=None,
                     help="cpu | gpu | mobile | embedded_cpu | fpga | asic (default: by transport)")
    new.add_argument("--host", help="ssh: address of the device host (or a Host alias of ~/.ssh/config)")
    new.add_argument("--port", type=int, help="ssh: port (default: the config's for an alias, else 22)")
    new.add_argument("--user", help="ssh: login user (default: the config's for an alias)")
    new.add_argument("--key", help="ssh: private key file, key authentication only (default: the config's "
                                   "IdentityFile for an alias)")
    new.add_argument("--jump", help="ssh: gateway the device is reached through, [user@]host[:port] as ssh -J "
                                    "(comma-separated for a chain)")
    new.add_argument("--host-name", help="Ray host resource name (default: the device name; 'local' for local)")
    new.add_argument("--python", help="ssh: interpreter on the device (default python3)")
    new.add_argument("--machine", help="ssh: expected `uname -m` (e.g. aarch64)")
    new.add_argument("--runtime", choices=["onnxruntime", "tvm", "torch", "command"],
                     help="default onnxruntime; command with --transport command")
    new.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    new.add_argument("--cores", help="comma-separated core set to pin to (e.g. 1 or 0,1,2,3)")
    new.add_argument("--batch-size", type=int, default=1, help="batch dimension of the input (default 1)")
    # --profile as in `hwl campaign run`, `hwl onboard` and `hwl measure`; --measurement was its only name
    new.add_argument("--profile", "--measurement", dest="measurement", choices=["quick", "standard"],
                     default="standard", help="measurement profile, [measurement] profile (default standard)")
    new.add_argument("--push", help="command: template that copies {model} to the device")
    new.add_argument("--check", help="command: template that exits 0 when the device holds a whole copy of the "
                                     "model {sha256} (run after each push, and before a copy is reused)")
    # --command as `hwl measure` names it (and the profile, runtime.options.command); --run was its only name
    new.add_argument("--command", "--run", dest="run", metavar="TEMPLATE",
                     help="command: template that benchmarks the model on the device (runtime.options.command)")
    new.add_argument("--regex", help="command: regex whose matches in the run output are latencies")
    new.add_argument("--json-path", help="command: dotted path to the latency in the run's JSON output")
    new.add_argument("--out", type=user_path, required=True, help="profile file to write (.toml)")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    new.set_defaults(func=cmd_new)

    lst = sub.add_parser("list", help="profiles hwl knows (shipped and in the user directory)")
    lst.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="print a profile as hwl reads it")
    show.add_argument("device")
    show.set_defaults(func=cmd_show)


def _q(value) -> str:
    """A TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_q(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# Flags that only mean something for one transport; given for another, they would be dropped silently.
TRANSPORT_FLAGS = {"ssh": ("host", "port", "user", "key", "jump", "python", "machine"),
                   "command": ("push", "check", "run", "regex", "json_path")}


def profile_toml(args) -> str:
    """The profile text the flags describe (checked by parsing it back before it is written)."""
    for transport, names in TRANSPORT_FLAGS.items():
        given = ["--" + n.replace("_", "-") for n in names if getattr(args, n) is not None]
        if given and args.transport != transport:
            raise UserError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --transport {transport}, "
                            f"not {args.transport}")
    default_class = {"local": "cpu", "ssh": "embedded_cpu", "command": "mobile"}[args.transport]
    host_name = args.host_name or ("local" if args.transport == "local" else args.name)
    lines = [f"name = {_q(args.name)}", f"device_class = {_q(args.device_class or default_class)}",
             "", "[host]", f"name = {_q(host_name)}", f"transport = {_q(args.transport)}"]
    if args.transport == "ssh":
        lines += _ssh_reach(args) + [f"python = {_q(args.python or 'python3')}", 'agent_dir = "~/.hwl"']
        if args.machine:
            lines.append(f"machine = {_q(args.machine)}")
        if args.jump:
            lines.append(f"jump = {_q(args.jump)}")
    if args.transport == "command":
        if args.runtime not in (None, "command"):  # it was written as runtime command, unsaid
            raise UserError(f"--runtime {args.runtime} runs in hwl's agent on the device; --transport command times "
                            "the device's own tool (--command), so its runtime is command")
        lines += [f"{key} = {_q(value)}" for key, value in (("push", args.push), ("check", args.check)) if value]
        runtime = "command"
    else:
        runtime = args.runtime or "onnxruntime"
    lines += ["", "[runtime]", f"kind = {_q(runtime)}", f"threads = {args.threads}"]
    if args.cores:
        try:
            cores = [int(c) for c in args.cores.split(",")]
        except ValueError:
            raise UserError(f"--cores {args.cores!r}: give core numbers separated by commas, e.g. 0,1,2,3") from None
        lines.append(f"cores = {_q(cores)}")
    if runtime == "command":
        if not args.run or bool(args.regex) == bool(args.json_path):  # both: --json-path was dropped, unsaid
            raise UserError("a command device needs --command and one of --regex / --json-path (not both)")
        lines += ["[runtime.options]", f"command = {_q(args.run)}"]
        lines.append(f"regex = {_q(args.regex)}" if args.regex else f"json_path = {_q(args.json_path)}")
    lines += ["", "[workload]", f"batch_size = {args.batch_size}",
              "", "[measurement]", f"profile = {_q(args.measurement)}",
              f"cooldown_s = {0.2 if args.transport == 'local' else 1.0}", ""]
    return "\n".join(lines)


def _ssh_reach(args) -> list[str]:
    """The address, port, user and key lines: for a Host alias of ~/.ssh/config, what the flags leave out is left
    to the config (as the profile loads it), and the port too where the config gives one."""
    from harness.ssh_config import SSH_CONFIG, SshConfigHost, ssh_config_for

    conf = ssh_config_for(args.host) if args.host else SshConfigHost()
    missing = [(flag, config_key) for flag, config_key, given in (
        ("--host", None, args.host), ("--user", "User", args.user or conf.user),
        ("--key", "IdentityFile", args.key or conf.identity_file)) if not given]
    if missing:
        unsaid = " or ".join(key for _, key in missing if key)
        config = f" (and {SSH_CONFIG.expanduser()} gives {args.host!r} no {unsaid})" if args.host else ""
        raise UserError(f"transport ssh needs {', '.join(flag for flag, _ in missing)}{config}")
    lines = [f"address = {_q(args.host)}"]
    if args.port is not None or conf.port is None:  # --port 0 is checked (and refused) like any port
        lines.append(f"port = {22 if args.port is None else args.port}")
    lines += [f"user = {_q(args.user)}"] if args.user else []
    return lines + ([f"key = {_q(_key_path(args.key))}"] if args.key else [])


def _key_path(key: str) -> str:
    """--key as the profile keeps it: a relative path made absolute, as every later command reads the key from the
    folder it runs in (written as given, `deploy` run elsewhere said 'key file keys/lab ... does not exist')."""
    return key if key.startswith("~") or Path(key).is_absolute() else str(Path(key).absolute())


def cmd_new(args) -> int:
    from harness.profiles import parse_profile, tomllib

    out = Path(args.out)
    _check_found_by_name(out, args.name)
    if out.is_dir():  # before --force is asked for: it cannot help
        raise UserError(f"{out} is a directory; give a file name to write")
    if out.suffix != ".toml":  # `hwl deploy pi-1` found no profile 'pi-1' (nor its folders a pi-1 without .toml)
        fixed = out.with_suffix(".toml") if out.suffix.lower() == ".toml" else out.with_name(out.name + ".toml")
        raise UserError(f"{out}: a profile file's name must end in .toml (hwl finds no other as a profile): give --out "
                        f"{fixed}")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it")
    text = profile_toml(args)
    parse_profile(tomllib.loads(text), source=str(out))  # never write a profile hwl would refuse
    check_writable(out)
    with written_whole(out) as target:
        target.write_text(text)
    print(out, file=messages_to(out))
    return 0


def _check_found_by_name(out: Path, name: str) -> None:
    """A profile written into a folder hwl searches must be named as its file: `new pi-1 --out .../pi-2.toml` wrote
    a profile that `show pi-1` did not find and `show pi-2` refused (its key 'name' is not the file's)."""
    from harness.profiles import shipped_dir, user_dir

    searched = {folder.expanduser().resolve() for folder in (shipped_dir(), user_dir())}
    if out.expanduser().resolve().parent in searched and out.name != f"{name}.toml":
        raise UserError(f"{out}: hwl finds the profiles of {out.parent} by their file name, so profile {name!r} "
                        f"goes in {out.with_name(name + '.toml')}")


def cmd_list(args) -> int:
    from harness.profiles import available_profiles

    for name, path in sorted(available_profiles().items()):
        print(f"{name}\t{path}")
    return 0


def cmd_show(args) -> int:
    from harness.profiles import load_profile

    sys.stdout.write(load_profile(args.device).to_json() + "\n")
    return 0
