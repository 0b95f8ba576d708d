"""Campaign planning: architectures x devices -> jobs in the store.

A campaign is "these architectures on these devices with this measurement profile". Planning
checks everything first (space, architectures, device profiles) and writes nothing when any of
it is wrong. The job order of each device is a permutation drawn from the recorded
``order_seed`` (and the device's name), so architecture families do not line up with thermal
drift and a resumed campaign keeps the same order.

A campaign file (TOML) may hold the same settings as the command line::

    name = "pis-overnight"        # optional; default: derived from the settings
    space = "nb201"
    archs = "random:30"           # all | random:N | list | @FILE (relative to the file)
    seed = 0
    devices = ["local-ort-1t", "local-tvm-1t"]
    profile = "quick"             # optional: overrides each device's measurement profile
"""
from __future__ import annotations

import hashlib
import json
import logging
import shlex
import sqlite3
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import CampaignError, ProfileError
from harness.profiles import (DeviceProfile, available_profiles, check_measurement, load_profile, load_profiles,
                              profile_from_dict)
from harness.text import count
from spaces import ArchError, get_space, resolve_archs
from spaces.cost import dataset_of

if TYPE_CHECKING:  # pandas: `hwl campaign run` refuses an unknown device or architecture before it opens a store
    from harness.store import Store

log = logging.getLogger(__name__)

CAMPAIGN_FILE_KEYS = ("name", "space", "archs", "seed", "devices", "profile", "order_seed")


@dataclass(frozen=True)
class CampaignSpec:
    """What to measure, as the user gave it.

    Parameters
    ----------
    space : str
        ``nb201`` or ``fbnet``.
    archs : str or list
        An architecture selection (see :func:`spaces.resolve_archs`).
    devices : tuple of str
        Profile names or profile file paths.
    seed : int
        Seed of ``random:N``; also the default job-order seed.
    measurement : str or None
        ``quick`` / ``standard`` overriding each profile's own setting.
    name : str or None
        Campaign name; by default derived from all settings, so the same command names the
        same campaign.
    order_seed : int or None
        Seed of the per-device job order (default: ``seed``).
    """

    space: str
    archs: str | tuple
    devices: tuple[str, ...]
    seed: int = 0
    measurement: str | None = None
    name: str | None = None
    order_seed: int | None = None


@dataclass
class Plan:
    """A resolved campaign: profiles and architecture keys (as stored: text)."""

    spec: CampaignSpec
    profiles: list[DeviceProfile]
    archs: list[str]
    name: str
    order_seed: int
    config: dict = field(default_factory=dict)


def load_campaign_file(path) -> dict:
    """Settings of a campaign TOML file, checked; keys as in :data:`CAMPAIGN_FILE_KEYS`."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark, as a profile's
    except OSError as exc:
        raise CampaignError(f"cannot read campaign file {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise CampaignError(f"{path}: not a text (UTF-8) file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in CAMPAIGN_FILE_KEYS:
            if {"host", "runtime"} & set(data):  # `hwl campaign run pi.toml --space ...`: a device meant
                raise CampaignError(f"{path} is a device profile, not a campaign file: give it to --devices "
                                    f"(--devices {path})")
            raise CampaignError(f"{path}: unknown key {key!r}; valid keys: {', '.join(CAMPAIGN_FILE_KEYS)}")
    devices = data.get("devices")
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if devices is not None and not (isinstance(devices, list) and all(isinstance(d, str) for d in devices)):
        raise CampaignError(f"{path}: key 'devices' must be a list of profile names, got {devices!r}")
    out = dict(data)
    if devices is not None:
        # Profile paths and @FILE selections are relative to the campaign file.
        out["devices"] = [str(path.parent / Path(d).expanduser()) if d.endswith(".toml") else d for d in devices]
    archs = data.get("archs")
    if isinstance(archs, str) and archs.startswith("@"):
        out["archs"] = "@" + str(path.parent / Path(archs[1:]).expanduser())  # '~/archs.txt' is no relative path
    elif isinstance(archs, list):
        out["archs"] = tuple(str(a) for a in archs)
    for key in ("seed", "order_seed"):
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0):
            raise CampaignError(f"{path}: key {key!r} must be a whole number >= 0, got {data[key]!r}")
    for key in ("name", "space", "profile"):
        if key in data and not isinstance(data[key], str):
            raise CampaignError(f"{path}: key {key!r} must be a string, got {data[key]!r}")
    if archs is not None and not isinstance(archs, (str, list)):
        raise CampaignError(f"{path}: key 'archs' must be a string (all, random:N, a list, @FILE) or a list of "
                            f"architectures, got {archs!r}")
    return out


def check_file_settings(path, settings: dict, from_file) -> None:
    """The settings a campaign file gives (``from_file``: those no flag replaced), checked as planning checks them,
    a refusal naming the file and the key: 'unknown device ...' or 'unknown measurement profile ...' named neither,
    and the same words come from a mistake in a flag."""
    checks = {
        "space": lambda: get_space(settings["space"]),
        "name": lambda: _check_name(settings["name"]),
        "profile": lambda: check_measurement(settings["profile"]),
        "devices": lambda: load_profiles(list(settings["devices"])),
        "archs": lambda: resolve_archs(settings["space"], _as_selection(settings["archs"]),
                                       seed=int(settings.get("seed") or 0)),
    }
    for key, check in checks.items():
        if key in from_file:
            try:
                check()
            except (ArchError, ProfileError, CampaignError) as exc:
                raise CampaignError(f"{path}: key {key!r}: {exc}") from None


def _as_selection(archs):
    """``archs`` as ``resolve_archs`` takes it: a campaign file's list arrives as a tuple."""
    return list(archs) if isinstance(archs, tuple) else archs


def _check_name(name: str | None) -> None:
    """A campaign name a later command can give back: a blank one (--name ' ') or one holding a newline or a tab
    was planned, then printed in the resume line and the status table as what no one could type."""
    if name is not None and (not name.strip() or name != name.strip() or not name.isprintable()):
        raise CampaignError(f"campaign name {name!r}: give a name without spaces at its ends and without control "
                            "characters (a newline, a tab)")


def resolve_plan(spec: CampaignSpec) -> Plan:
    """Check every part of ``spec`` (raises ArchError / ProfileError / CampaignError)."""
    get_space(spec.space)
    _check_name(spec.name)
    archs = resolve_archs(spec.space, _as_selection(spec.archs), seed=spec.seed)
    profiles = [p.with_measurement(spec.measurement) for p in load_profiles(list(spec.devices))]
    for p in profiles:
        try:
            dataset_of(spec.space, p.dataset)
        except ArchError as exc:
            raise CampaignError(f"device {p.name} ({p.source}): {exc}") from None
    order_seed = spec.seed if spec.order_seed is None else spec.order_seed
    keys = [str(a) for a in archs]
    config = {
        "space": spec.space, "seed": spec.seed, "order_seed": order_seed,
        "measurement": spec.measurement,
        "devices": {p.name: p.identity() for p in profiles},
        "archs_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "n_archs": len(keys),
    }
    config = _as_stored(config)
    return Plan(spec=spec, profiles=profiles, archs=keys, name=spec.name or _config_name(config),
                order_seed=order_seed, config=config)


def _as_stored(config: dict) -> dict:
    """``config`` as the store gives it back (JSON: tuples become lists)."""
    return json.loads(json.dumps(config, sort_keys=True))


def _config_name(config: dict) -> str:
    return "c-" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def _earlier_unnamed(store: Store, plan: Plan) -> sqlite3.Row | None:
    """The unnamed campaign (``c-`` and a hash) of the plan's settings that an older hwl planned under another
    name: the hash was taken over whole profiles (addresses, descriptions) and over whatever keys a profile had
    then, so each new profile key renamed the same command's campaign. Compared as :func:`_comparable` reads
    a stored config, the newest first."""
    cur = store.db.execute("SELECT * FROM campaigns WHERE name LIKE 'c-%' AND space = ? ORDER BY id DESC",
                           (plan.spec.space,))
    cur.row_factory = sqlite3.Row
    return next((row for row in cur.fetchall() if not _differing_settings(row, plan)), None)


def _differing_settings(row: sqlite3.Row, plan: Plan) -> list[str]:
    """The dotted keys of the settings ``plan`` and the stored campaign ``row`` differ in. A ``random:N`` selection
    is its text and seed, not its draws: an hwl before December 2026 drew NB201's random:N otherwise (not nested),
    and the same command goes on with the campaign it planned then, measuring the architectures stored with it."""
    diff = differing_keys(_comparable(json.loads(row["config_json"])), plan.config)
    spec = _arch_spec(plan.spec).strip()
    drawn_alike = spec.startswith("random:") and row["arch_spec"].strip() == spec
    return [key for key in diff if not (key == "archs_sha256" and drawn_alike)]


def _arch_spec(spec: CampaignSpec) -> str:
    """The architecture selection as a campaign stores it."""
    return spec.archs if isinstance(spec.archs, str) else ",".join(spec.archs)


def _comparable(config: dict) -> dict:
    """A stored campaign config with each device as its identity (older stores kept whole profiles)."""
    devices = {name: profile_from_dict(d).identity() for name, d in config.get("devices", {}).items()}
    return _as_stored({**config, "devices": devices})


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differing_keys(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(prefix + key)
    return out


def dotted_value(nested: dict, dotted: str):
    """The value at a dotted key of ``differing_keys`` (None where the path is missing)."""
    for part in dotted.split("."):
        nested = nested.get(part) if isinstance(nested, dict) else None
    return nested


def device_order(n_archs: int, order_seed: int, device: str) -> np.ndarray:
    """Position of each architecture in a device's queue (a seeded permutation)."""
    rng = np.random.default_rng([order_seed, zlib.crc32(device.encode())])
    return rng.permutation(n_archs)


def plan_campaign(store: Store, spec: CampaignSpec, plan: Plan | None = None, *,
                  resume_flags=()) -> tuple[int, Plan, bool]:
    """Plan ``spec`` into ``store``; returns (campaign id, plan, created).

    When a campaign of that name exists with the same settings it is returned as is (the same
    command run twice measures nothing twice); with other settings it is refused. ``plan`` is
    ``resolve_plan(spec)`` when the caller already has it; ``resume_flags`` go into the resume line
    it may print (see :func:`resume_command`).
    """
    plan = plan or resolve_plan(spec)
    # the lookup, the checks and the creation under one write lock: the same command started twice at once, or an
    # import of a device of it, would otherwise pass them both (two creations: a UNIQUE error; a pooled device)
    with store.transaction():
        return _plan_locked(store, spec, plan, resume_flags)


def _plan_locked(store: Store, spec: CampaignSpec, plan: Plan, resume_flags) -> tuple[int, Plan, bool]:
    row = store.campaign(plan.name)
    if row is None and spec.name is None:
        row = _earlier_unnamed(store, plan)
    if row is not None:
        diff = _differing_settings(row, plan)
        if diff:
            raise CampaignError(f"campaign {row['name']!r} already exists in {store.path} with other settings "
                                f"({', '.join(diff)} differ); choose another --name or resume it as it is")
        plan.name = row["name"]
        refresh_reach(store, row["id"], plan.profiles)
        return row["id"], plan, False
    refuse_imported_names(store, spec.space, plan.profiles)
    _warn_of_unfinished_alike(store, plan, resume_flags)
    jobs = ((p.name, arch, int(pos)) for p in plan.profiles
            for arch, pos in zip(plan.archs, device_order(len(plan.archs), plan.order_seed, p.name)))
    cid = store.create_campaign(
        name=plan.name, space=spec.space, measurement=spec.measurement, arch_spec=_arch_spec(spec),
        seed=spec.seed, order_seed=plan.order_seed, config=plan.config,
        devices={p.name: p.stored_json() for p in plan.profiles}, jobs=jobs)
    log.info("planned campaign %s: %s x %s", plan.name, count(len(plan.archs), "arch", "archs"),
             count(len(plan.profiles), "device", "devices"))
    return cid, plan, True


def refuse_imported_names(store: Store, space: str, profiles) -> None:
    """Refuse to measure a device under a name the store holds as an imported table (HELP's pixel3, say): the
    table carries no settings, so the predictor commands' one median per architecture would pool both (as
    `hwl data import` refuses the other way round). Nothing is planned."""
    names = [p.name for p in profiles]
    if not names:
        return
    imported = store.imported_sources(space, names)
    if imported.empty:
        return
    device = imported["device"].iloc[0]
    files = ", ".join(f"{n} from {source}" for _, source, n in imported[imported["device"] == device]
                      .itertuples(index=False))
    raise CampaignError(f"device {device} is in {store.path} as an imported {space} table ({files}; settings "
                        "unknown), and measuring it under that name would pool both in the predictor commands' "
                        f"median: give the profile another name (name = \"{device}-lab\", say) or use another "
                        "--store; nothing planned")


def resume_command(store_path, name: str, flags=()) -> str:
    """The `hwl campaign resume` line that finishes campaign ``name``, to paste as it is (quoted). ``flags``: those
    of the command that prints it which the resume needs too (--known-hosts, --address, --artifacts ...)."""
    return shlex.join(["hwl", "campaign", "resume", "--store", str(store_path), "--name", name, *flags])


# `hwl onboard` measures in batches, each a campaign named "onboard:DEVICE:SPACE:..."
ONBOARDING_PREFIX = "onboard"


def onboarding_prefix(device: str, space: str) -> str:
    return f"{ONBOARDING_PREFIX}:{device}:{space}:"


def go_on_command(store_path, name: str, flags=(), *, profiles: dict | None = None) -> str:
    """The command that goes on with campaign ``name`` (see :func:`resume_command`). An onboarding's batch is gone
    on with by its `hwl onboard` command run again: a resume measured that batch alone, and left the onboarding's
    next picks, its model and its table to a run of `hwl onboard` that status did not name. ``profiles``: the
    campaign's device -> stored profile JSON, for the device argument (:func:`onboard_device_argument`)."""
    prefix, device, space, *_ = name.split(":") + ["", ""]
    if prefix != ONBOARDING_PREFIX or not device or not space:
        return resume_command(store_path, name, flags)
    device_arg = onboard_device_argument(device, (profiles or {}).get(device))
    return (shlex.join(["hwl", "onboard", device_arg, "--space", space, "--store", str(store_path)]) + " ... (the "
            "onboarding's command as it was given: it finishes this batch, then goes on where it stopped)")


def onboard_device_argument(device: str, profile_json: str | None) -> str:
    """How `hwl onboard` names ``device``: its profile name where hwl finds the file it was measured with by that
    name, else that file (the stored profile's ``source``). A device onboarded from a profile file was named by its
    name alone, which `hwl onboard` refused as an unknown device."""
    try:
        source = json.loads(profile_json or "{}").get("source") or ""
    except (ValueError, AttributeError):  # an older or hand-made row: the name is all there is
        return device
    by_name = available_profiles().get(device)
    if not source or (by_name is not None and Path(by_name).resolve() == Path(source).resolve()):
        return device
    return source


def _warn_of_unfinished_alike(store: Store, plan: Plan, resume_flags=()) -> None:
    """A profile edited between two runs of one command (a cooldown, the cores) makes a new campaign
    that measures everything again, and left the first one unfinished without a word: say so."""
    for cid, name, config_json in store.db.execute("SELECT id, name, config_json FROM campaigns ORDER BY id"):
        config = _comparable(json.loads(config_json))
        diff = differing_keys(config, plan.config)
        before, now = set(config.get("devices", {})), set(plan.config["devices"])
        if not diff or not before & now or not all(key.startswith("devices.") for key in diff):
            continue
        (left,) = store.db.execute("SELECT count(*) FROM jobs WHERE campaign_id = ? AND state IN ('queued', "
                                   "'running')", (cid,)).fetchone()
        if not left:
            continue
        if before == now:
            why, again = f"on the same devices with other settings ({', '.join(diff)} differ)", ""
        else:  # a device added to the same command: the first campaign's devices were fixed when it was planned
            changed = [f"+{d}" for d in sorted(now - before)] + [f"-{d}" for d in sorted(before - now)]
            why = (f"on {', '.join(sorted(before))}, and this command names other devices ({', '.join(changed)}; "
                   "a campaign's devices are fixed when it is planned)")
            again = f", which measures them again on {', '.join(sorted(before & now))}"
        log.warning("campaign %s measures the same architectures %s, so this is a new campaign, %s%s; its %s queued: "
                    "`%s` finishes %s as planned", name, why, plan.name, again,
                    count(left, "unmeasured job stays", "unmeasured jobs stay"),
                    resume_command(store.path, name, resume_flags), "it" if left == 1 else "them")


def campaign_profiles(store: Store, campaign_id: int) -> list[DeviceProfile]:
    """The device profiles stored with a campaign (the coordinator measures with these)."""
    return [profile_from_dict(json.loads(pj)) for pj in
            store.devices(campaign_id)["profile_json"]]


def current_profiles(store: Store, campaign_id: int) -> list[DeviceProfile]:
    """The campaign's devices as their profile files say today: the file each was read from, else
    the profile of that name. A device whose file is gone is left out; one whose file no longer
    parses too, with a warning."""
    (measurement,) = store.db.execute("SELECT measurement FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    known = available_profiles()
    out = []
    for stored in campaign_profiles(store, campaign_id):
        where = stored.source if stored.source and Path(stored.source).is_file() else known.get(stored.name)
        if where is None:
            continue
        try:
            profile = load_profile(where).with_measurement(measurement)
        except ProfileError as exc:
            log.warning("device %s: the campaign keeps its stored profile: %s", stored.name, exc)
            continue
        if profile.name == stored.name:
            out.append(profile)
    return out


def refresh_reach(store: Store, campaign_id: int, profiles) -> list[str]:
    """Reach the campaign's devices as ``profiles`` (today's files) say; one line per device changed.

    Only how a device is reached may change (``profiles.REACH_KEYS``: a Pi that came back at
    another address, a new key). A profile whose measurement settings changed is not taken, with
    a warning: the campaign's results must stay comparable."""
    stored = {p.name: p for p in campaign_profiles(store, campaign_id)}
    changed = []
    for new in profiles:
        old = stored.get(new.name)
        if old is None:
            continue
        diff = differing_keys(old.identity(), new.identity())
        if diff:
            log.warning("device %s: %s sets %s otherwise than when the campaign started; the campaign keeps "
                        "its own settings (plan a new campaign to measure the new ones)",
                        new.name, new.source, ", ".join(diff))
            continue
        changes = old.reach_changes(new)
        if changes:
            store.set_device_profile(campaign_id, new.name, old.with_reach_of(new).stored_json())
            line = f"{new.name}: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items())
            log.warning("device %s (from %s)", line, new.source)
            changed.append(line)
    return changed


def _imported_only(store: Store) -> str:
    """The end of 'holds no campaign': a store of imported tables alone (`hwl data import` into a second store)
    was told to start a campaign, as if it held nothing."""
    files = store.query("SELECT source, count(*) AS n FROM imported GROUP BY source ORDER BY min(rowid)")
    if files.empty:
        return "; start one with `hwl campaign run`"
    tables = ", ".join(f"{count(int(n), 'latency', 'latencies') if i == 0 else n} from {source}"
                       for i, (source, n) in enumerate(files.itertuples(index=False)))
    return (f", only imported tables ({tables}): campaign commands read measured campaigns, so pass those files on "
            f"as they are, or give the predictor commands --store {store.path}")


def find_campaign(store: Store, name: str | None) -> tuple[int, str, str]:
    """(id, name, space) of a campaign; ``None`` means the store's only (or latest) campaign."""
    names = store.campaign_names()
    if not names:
        raise CampaignError(f"store {store.path} holds no campaign{_imported_only(store)}")
    if name is None:
        name = names[-1]
        if len(names) > 1:  # onboarding makes one campaign per batch: say which one this is
            others = names[:-1]  # the one taken is not another
            shown = ", ".join(others[-5:]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            log.warning("%s holds %d campaigns; taking the latest, %s (--name picks another: %s)", store.path,
                        len(names), name, shown)
    row = store.campaign(name)
    if row is None:
        raise CampaignError(f"no campaign {name!r} in {store.path}; campaigns: {', '.join(names)}")
    return row["id"], row["name"], row["space"]
