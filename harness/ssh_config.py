"""What the user's ``~/.ssh/config`` says of a host, for the few keys hwl takes from it: HostName, Port, User,
IdentityFile and ProxyJump, filled in where a device profile leaves them out, so a lab's own ssh setup works.
Every other key is ignored (README says so): ``StrictHostKeyChecking no`` never turns host key checks off."""
from __future__ import annotations

from dataclasses import dataclass, field
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
