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
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import CampaignError
from harness.profiles import DeviceProfile, load_profiles, profile_from_dict
from harness.store import Store
from spaces import ArchError, get_space, resolve_archs
from spaces.cost import dataset_of

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
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CampaignError(f"cannot read campaign file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in CAMPAIGN_FILE_KEYS:
            raise CampaignError(f"{path}: unknown key {key!r}; valid keys: {', '.join(CAMPAIGN_FILE_KEYS)}")
    devices = data.get("devices")
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if devices is not None and not (isinstance(devices, list) and all(isinstance(d, str) for d in devices)):
        raise CampaignError(f"{path}: key 'devices' must be a list of profile names, got {devices!r}")
    out = dict(data)
    if devices is not None:
        # Profile paths and @FILE selections are relative to the campaign file.
        out["devices"] = [str(path.parent / d) if d.endswith(".toml") else d for d in devices]
    archs = data.get("archs")
    if isinstance(archs, str) and archs.startswith("@"):
        out["archs"] = "@" + str(path.parent / archs[1:])
    elif isinstance(archs, list):
        out["archs"] = tuple(str(a) for a in archs)
    for key in ("seed", "order_seed"):
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool)):
            raise CampaignError(f"{path}: key {key!r} must be an integer, got {data[key]!r}")
    return out


def resolve_plan(spec: CampaignSpec) -> Plan:
    """Check every part of ``spec`` (raises ArchError / ProfileError / CampaignError)."""
    get_space(spec.space)
    archs = resolve_archs(spec.space, list(spec.archs) if isinstance(spec.archs, tuple) else spec.archs,
                          seed=spec.seed)
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
        "devices": {p.name: _profile_identity(p) for p in profiles},
        "archs_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "n_archs": len(keys),
    }
    config = json.loads(json.dumps(config, sort_keys=True))  # tuples -> lists, as stored
    name = spec.name or "c-" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return Plan(spec=spec, profiles=profiles, archs=keys, name=name, order_seed=order_seed, config=config)


def _profile_identity(profile: DeviceProfile) -> dict:
    """A profile's settings without where it was read from."""
    d = profile.to_dict()
    d.pop("source", None)
    return d


def device_order(n_archs: int, order_seed: int, device: str) -> np.ndarray:
    """Position of each architecture in a device's queue (a seeded permutation)."""
    rng = np.random.default_rng([order_seed, zlib.crc32(device.encode())])
    return rng.permutation(n_archs)


def plan_campaign(store: Store, spec: CampaignSpec) -> tuple[int, Plan, bool]:
    """Plan ``spec`` into ``store``; returns (campaign id, plan, created).

    When a campaign of that name exists with the same settings it is returned as is (the same
    command run twice measures nothing twice); with other settings it is refused.
    """
    plan = resolve_plan(spec)
    row = store.campaign(plan.name)
    if row is not None:
        stored = json.loads(row["config_json"])
        if stored != plan.config:
            diff = sorted(k for k in set(stored) | set(plan.config) if stored.get(k) != plan.config.get(k))
            raise CampaignError(f"campaign {plan.name!r} already exists in {store.path} with other settings "
                                f"({', '.join(diff)} differ); choose another --name or resume it as it is")
        return row["id"], plan, False
    jobs = ((p.name, arch, int(pos)) for p in plan.profiles
            for arch, pos in zip(plan.archs, device_order(len(plan.archs), plan.order_seed, p.name)))
    arch_spec = spec.archs if isinstance(spec.archs, str) else ",".join(spec.archs)
    cid = store.create_campaign(
        name=plan.name, space=spec.space, measurement=spec.measurement, arch_spec=arch_spec,
        seed=spec.seed, order_seed=plan.order_seed, config=plan.config,
        devices={p.name: p.to_json() for p in plan.profiles}, jobs=jobs)
    log.info("planned campaign %s: %d archs x %d devices", plan.name, len(plan.archs), len(plan.profiles))
    return cid, plan, True


def campaign_profiles(store: Store, campaign_id: int) -> list[DeviceProfile]:
    """The device profiles stored with a campaign (a resume uses these, not today's files)."""
    return [profile_from_dict(json.loads(pj)) for pj in
            store.devices(campaign_id)["profile_json"]]


def find_campaign(store: Store, name: str | None) -> tuple[int, str, str]:
    """(id, name, space) of a campaign; ``None`` means the store's only (or latest) campaign."""
    names = store.campaign_names()
    if not names:
        raise CampaignError(f"store {store.path} holds no campaign; start one with `hwl campaign run`")
    if name is None:
        name = names[-1]
    row = store.campaign(name)
    if row is None:
        raise CampaignError(f"no campaign {name!r} in {store.path}; campaigns: {', '.join(names)}")
    return row["id"], row["name"], row["space"]
