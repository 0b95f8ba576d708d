"""Which campaigns, and which of their devices, one `hwl campaign export` file holds.

A device's latencies under one setting may be spread over several campaigns (each onboarding batch is one;
a later campaign adds architectures), so an export takes several ``--name``, or every campaign that measured
a ``--device``. The file holds one space and each device under one setting: its readers (the predictor
commands, `hwl data import`) take one median per architecture, which would pool two settings.
"""
from __future__ import annotations

from harness.campaign import find_campaign
from harness.device_settings import describe_settings, export_command, measured_settings
from harness.errors import CampaignError
from harness.store import Store


def select_export(store: Store, names=(), devices=()) -> tuple[list[int], list[str]]:
    """(campaign ids, campaign names) to export: ``names``, else every campaign measuring one of ``devices``,
    else the store's latest. Refuses a device no chosen campaign measures, two spaces, a device of two settings."""
    names, devices = list(dict.fromkeys(names or ())), list(dict.fromkeys(devices or ()))
    if not names and devices:
        names = _campaigns_measuring(store, devices)
    chosen = [find_campaign(store, name) for name in names] if names else [find_campaign(store, None)]
    ids, names = [cid for cid, _, _ in chosen], [name for _, name, _ in chosen]
    if devices:
        _check_devices_measured(store, ids, names, devices)
    spaces = {space for _, _, space in chosen}
    if len(spaces) > 1:
        parts = "; ".join(f"{space}: {', '.join(n for _, n, s in chosen if s == space)}" for space in sorted(spaces))
        raise CampaignError(f"campaigns of {len(spaces)} spaces ({parts}); one export file holds one space: "
                            "give --name of one space's campaigns")
    if len(ids) > 1:
        _check_one_setting(store, ids, names, spaces.pop(), devices)
    return ids, names


def _campaigns_measuring(store: Store, devices: list[str]) -> list[str]:
    rows = store.query(f"SELECT DISTINCT c.name, c.id FROM campaigns c JOIN campaign_devices d ON d.campaign_id = "
                       f"c.id WHERE d.device IN ({','.join('?' * len(devices))}) ORDER BY c.id", tuple(devices))
    if rows.empty:
        known = store.query("SELECT DISTINCT device FROM campaign_devices ORDER BY device")["device"]
        raise CampaignError(f"no campaign in {store.path} measures {', '.join(devices)}; devices it measures: "
                            f"{', '.join(known) or 'none'}")
    return rows["name"].tolist()


def _check_devices_measured(store: Store, ids: list[int], names: list[str], devices: list[str]) -> None:
    marks = ",".join("?" * len(ids))
    there = set(store.query(f"SELECT DISTINCT device FROM campaign_devices WHERE campaign_id IN ({marks})",
                            tuple(ids))["device"])
    missing = [d for d in devices if d not in there]
    if missing:
        raise CampaignError(f"campaign{'s' if len(names) > 1 else ''} {', '.join(names)} measure"
                            f"{'' if len(names) > 1 else 's'} no device {', '.join(missing)}; devices: "
                            f"{', '.join(sorted(there))}")


def _check_one_setting(store: Store, ids: list[int], names: list[str], space: str, devices: list[str]) -> None:
    """A device whose accepted latencies in these campaigns come from two settings would be pooled by the file's
    readers: refused, naming the settings and the export of the first one's campaigns."""
    if not devices:
        marks = ",".join("?" * len(ids))
        devices = store.query(f"SELECT DISTINCT device FROM campaign_devices WHERE campaign_id IN ({marks}) "
                              "ORDER BY device", tuple(ids))["device"].tolist()
    for device in devices:
        settings = measured_settings(store, space, device, ids)
        if len(settings) > 1:
            one = export_command(store.path, settings[0][2], device)
            raise CampaignError(f"campaigns {', '.join(names)} hold {device}'s {space} latencies measured with "
                                f"{len(settings)} different settings: {describe_settings(settings)}; one file would "
                                f"pool them, so export one setting's campaigns ({one} --out FILE)")


__all__ = ["select_export"]
