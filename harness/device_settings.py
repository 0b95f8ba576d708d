"""Which settings a store's latencies of one device name were measured with.

A device name measured with other threads, cores, runtime options or batch size
(``DeviceProfile.identity``) holds another device's latencies: reading the store's table, which
takes the median of every accepted latency of an (arch, device), would mix them, e.g. batch 1 and
batch 8 timings of the same architecture averaged into neither. `hwl onboard` keeps the profile's
own (``harness.onboard.comparable_rows``); commands that read a store's whole table check here.
"""
from __future__ import annotations

import json
from shlex import quote
from pathlib import Path

from harness.campaign import differing_keys, dotted_value
from harness.errors import UserError
from harness.profiles import profile_from_dict
from harness.store import Store


def measured_settings(store: Store, space: str, device: str,
                      campaign_ids=None) -> list[tuple[dict, int, list[str]]]:
    """(identity, accepted latencies, campaign names) of each setting ``device`` was measured with in ``space``
    (in the campaigns ``campaign_ids`` only, when given)."""
    only = "" if campaign_ids is None else f" AND c.id IN ({','.join('?' * len(campaign_ids))})"
    rows = store.query(
        "SELECT d.profile_json, c.name AS campaign, count(*) AS n FROM results r JOIN jobs j ON r.job_id = j.id "
        "JOIN campaigns c ON j.campaign_id = c.id JOIN campaign_devices d ON d.campaign_id = j.campaign_id "
        "AND d.device = j.device WHERE c.space = ? AND j.device = ? AND r.accepted = 1 AND r.label_ms IS NOT NULL"
        f"{only} GROUP BY d.profile_json, c.name ORDER BY min(r.id)", (space, device, *(campaign_ids or ())))
    settings: dict[str, tuple[dict, int, list[str]]] = {}
    for profile_json, campaign, n in rows.itertuples(index=False):
        identity = profile_from_dict(json.loads(profile_json)).identity()  # the host's address is not a setting
        key = json.dumps(identity, sort_keys=True)
        _, count, campaigns = settings.get(key, (identity, 0, []))
        settings[key] = (identity, count + int(n), campaigns + [campaign])
    return list(settings.values())


def check_one_setting(store_path, space: str, devices) -> None:
    """Raise a one-line ``UserError`` when one of ``devices`` was measured with more than one setting."""
    with Store(Path(store_path), readonly=True) as store:
        for device in devices:
            settings = measured_settings(store, space, device)
            if len(settings) == 1:
                _check_not_also_imported(store, store_path, space, device, settings[0])
            if not settings:
                _check_one_imported_file(store, store_path, space, device)
            if len(settings) < 2:
                continue
            export = export_command(store_path, settings[0][2], device)
            raise UserError(f"store {store_path} holds {device}'s {space} latencies measured with {len(settings)} "
                            f"different settings: {describe_settings(settings)}; their median would mix them, so "
                            f"export one setting's campaigns ({export} --out FILE.parquet) and give that file instead "
                            "of --store, or measure each setting under its own device name")


def describe_settings(settings: list[tuple[dict, int, list[str]]]) -> str:
    """'10 with batch_size = 1 (campaign batch-1); 5 with batch_size = 2 (campaign batch-2)': what differs."""
    keys = sorted({k for identity, _, _ in settings[1:] for k in differing_keys(settings[0][0], identity)})
    return "; ".join(f"{n} with {', '.join(f'{k} = {dotted_value(identity, k)}' for k in keys)} (campaign"
                     f"{'s' if len(campaigns) > 1 else ''} {', '.join(campaigns)})"
                     for identity, n, campaigns in settings)


def export_command(store_path, campaigns: list[str], device: str) -> str:
    """The `hwl campaign export` of ``device``'s results in these campaigns into one file (less its --out); the
    campaigns' other devices may have other settings among them, which the export would refuse."""
    names = " ".join(f"--name {quote(c)}" for c in campaigns)
    return f"hwl campaign export --store {quote(str(store_path))} {names} --device {quote(device)}"


def _check_not_also_imported(store: Store, store_path, space: str, device: str, setting) -> None:
    """Refuse a device name both measured and imported: an imported table carries no settings, so its
    latencies may be another device's or another setting's, and the store's median would mix them."""
    imported = store.imported_sources(space, [device])[["source", "n"]]
    if imported.empty:
        return
    _, n, campaigns = setting
    files = ", ".join(f"{n} from {source}" for source, n in imported.itertuples(index=False))
    raise UserError(f"store {store_path} holds {device}'s {space} latencies both measured ({n}, campaign"
                    f"{'s' if len(campaigns) > 1 else ''} {', '.join(campaigns)}) and imported ({files}; settings "
                    f"unknown); their median would mix them, so export the campaign"
                    f"{'s' if len(campaigns) > 1 else ''} ({export_command(store_path, campaigns, device)} --out "
                    "FILE.parquet) and give that file instead of --store; import a table under a device name no "
                    "campaign measures")


def _check_one_imported_file(store: Store, store_path, space: str, device: str) -> None:
    """Refuse a device name imported from two files (a store from before `hwl data import` refused the second):
    two labs' or two settings' tables, pooled into one median."""
    imported = store.imported_sources(space, [device])[["source", "n"]]
    if len(imported) < 2:
        return
    files = ", ".join(f"{n} from {source}" for source, n in imported.itertuples(index=False))
    raise UserError(f"store {store_path} holds {device}'s {space} latencies imported from {len(imported)} files "
                    f"({files}); their median would mix them, so give one of the files instead of --store, or "
                    "import each into a new store under its own device name (hwl data import --device NAME)")


__all__ = ["check_one_setting", "describe_settings", "export_command", "measured_settings"]
