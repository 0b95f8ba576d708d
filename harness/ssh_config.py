"""What the user's ``~/.ssh/config`` says of a host, for the few keys hwl takes from it: HostName, Port, User,
IdentityFile and ProxyJump, filled in where a device profile leaves them out, so a lab's own ssh setup works.
Every other key is ignored (README says so): ``StrictHostKeyChecking no`` never turns host key checks off.
One login on the way to a device, the device's own or a gateway's, is settled here, by the same rules for both."""
from __future__ import annotations

import getpass
from dataclasses import dataclass, field, replace
from pathlib import Path

import paramiko

from harness.errors import ProfileError

SSH_CONFIG = Path("~/.ssh/config")


@dataclass(frozen=True)
class SshConfigHost:
    """The keys hwl reads for one host name (None or empty: the config does not give it)."""

    hostname: str | None = None
    port: int | None = None
    user: str | None = None
    identity_files: tuple[str, ...] = field(default=())
    proxy_jump: str | None = None
    proxy_command: str | None = None  # not run by hwl: a profile reaching such a host is refused

    @property
    def identity_file(self) -> str | None:
        """The first IdentityFile that exists (ssh tries each in turn; hwl logs in with one key), else the first."""
        found = [f for f in self.identity_files if Path(f).expanduser().is_file()]
        return (found or list(self.identity_files) or [None])[0]


def ssh_config_for(name: str) -> SshConfigHost:
    """What ``~/.ssh/config`` gives ``name`` (nothing without the file); a ProfileError naming the file when it
    cannot be read or gives a value hwl cannot use."""
    path = SSH_CONFIG.expanduser()
    if not path.is_file():
        return SshConfigHost()
    try:
        found = paramiko.SSHConfig.from_path(str(path)).lookup(name)
    except (paramiko.ssh_exception.ConfigParseError, ImportError, OSError, UnicodeDecodeError, ValueError) as exc:
        # ImportError: a `Match exec` line, which paramiko runs only with the invoke package
        raise ProfileError(f"{path}: cannot read it for host {name!r} ({exc.__class__.__name__}: {exc}); fix the "
                           "file, or give the profile's [host] keys in full") from None
    hostname = found.get("hostname")
    for key, value in (("HostName", hostname), ("ProxyJump", found.get("proxyjump"))):
        if value and "%" in value:
            raise ProfileError(f"{path}: {key} {value!r} for host {name!r} holds a %-token, which hwl does not "
                               "expand; write the value out, or give it in the profile")
    port = found.get("port")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ProfileError(f"{path}: Port {port!r} for host {name!r} is not a TCP port 1..65535")
    proxy_jump, proxy_command = (None if (found.get(k) or "none").lower() == "none" else found[k]
                                 for k in ("proxyjump", "proxycommand"))
    return SshConfigHost(hostname=hostname if hostname != name else None, port=int(port) if port else None,
                         user=found.get("user"), identity_files=tuple(found.get("identityfile", ())),
                         proxy_jump=proxy_jump, proxy_command=proxy_command)


@dataclass(frozen=True)
class SshLogin:
    """One login on the way to a device (the device's own, or a gateway's), its keys settled as ssh settles them:
    what is given (a profile's keys, a -J hop's ``user@`` and ``:port``) wins, then what the config gives the name
    as written; None: neither gives it."""

    name: str  # as written: a Host alias of the config, or the address itself
    address: str
    port: int
    user: str | None
    key: str | None
    proxy_jump: str | None = None  # the config's, which ssh follows where nothing stands in front of this login
    proxy_command: str | None = None


def settle(name: str, *, user: str | None = None, port: int | None = None, key: str | None = None) -> SshLogin:
    """The login to ``name`` with what is given, the config filling the rest (its HostName replaces the name)."""
    conf = ssh_config_for(name)
    return SshLogin(name=name, address=conf.hostname or name, port=port or conf.port or 22, user=user or conf.user,
                    key=key or conf.identity_file, proxy_jump=conf.proxy_jump, proxy_command=conf.proxy_command)


def refuse_proxy_command(login: SshLogin, what: str, fix: str, *, source: str | None = None) -> None:
    """A ProfileError when ssh would reach ``login`` through a ProxyCommand, which hwl does not run: reaching it
    directly instead would go round what the lab set up, silently."""
    if login.proxy_command and not login.proxy_jump:
        where = f"{source}: " if source else ""
        raise ProfileError(f"{where}{SSH_CONFIG.expanduser()} reaches {what}{login.name!r} through a ProxyCommand, "
                           f"which hwl does not run; {fix}")


def gateways(jump: str | None, *, key: str | None, behind: str | None = None) -> list[SshLogin]:
    """The gateways in front of a device, the first reached first, as ssh -J goes through them: ``jump``'s hops
    (``[user@]host[:port]``, comma-separated), and in front of the first one the ProxyJump the config gives it,
    and so on (a later hop is reached through the hops before it, whatever the config says of its own proxy). A
    hop logs in as the hop's user, else the config's, else this user (as ssh -J); with the config's IdentityFile,
    else the device's ``key``. ``behind``: the device's alias when ``jump`` is its ProxyJump (for the loop check).
    A ProfileError naming the config for a ProxyJump that comes back round, or one hwl cannot read."""
    followed, chain = [behind] if behind else [], []
    while jump:
        hops = [_gateway(text, key, written_for=followed[-1] if followed else None) for text in jump.split(",")]
        chain[:0] = hops
        first = hops[0]
        if not first.proxy_jump:
            refuse_proxy_command(first, "jump host ", "give the config a ProxyJump for it (or a gateway in front "
                                                      "of it in the profile's jump)")
            break
        followed.append(first.name)
        if first.name in followed[:-1]:
            loop = " -> ".join(followed[followed.index(first.name):])
            raise ProfileError(f"{SSH_CONFIG.expanduser()}: ProxyJump goes round in a loop ({loop}); ssh would "
                               "never get there either: set ProxyJump none where the chain should end")
        jump = first.proxy_jump
    return chain


def _gateway(text: str, key: str | None, *, written_for: str | None) -> SshLogin:
    """One hop of a jump, settled (see ``gateways``); ``written_for``: the host whose config ProxyJump holds it."""
    try:
        user, name, port = jump_hop(text)
    except ValueError as exc:  # a profile's jump was checked as it loaded: this is the config's
        raise ProfileError(f"{SSH_CONFIG.expanduser()}: ProxyJump {text.strip()!r} for host {written_for!r} "
                           f"{exc}") from None
    hop = settle(name, user=user, port=port)
    own_key = hop.key if hop.key and Path(hop.key).expanduser().is_file() else None
    return replace(hop, user=hop.user or getpass.getuser(), key=own_key or key)


def jump_hop(text: str) -> tuple[str | None, str, int | None]:
    """One gateway as ssh's -J writes it, ``[user@]host[:port]`` (an IPv6 address with a port in brackets), as
    (user or None, host, port or None); a ValueError saying what is wrong."""
    user, at, rest = text.strip().rpartition("@")
    if at and not user:
        raise ValueError("has an empty user before '@'")
    host, port = rest, None
    if rest.startswith("[") and "]" in rest:  # [::1]:2222
        host, _, after = rest[1:].partition("]")
        if after and not (after.startswith(":") and after[1:].isdigit()):
            raise ValueError("is not [user@]host[:port]")
        port = int(after[1:]) if after else None
    elif rest.count(":") == 1:
        host, _, word = rest.partition(":")
        if not word.isdigit():
            raise ValueError(f"has port {word!r}: give a number")
        port = int(word)
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"has port {port}: a TCP port is 1..65535")
    if not host or any(ch.isspace() or ch in "@/[]" for ch in host):
        raise ValueError("is not [user@]host[:port]")
    return user or None, host, port
