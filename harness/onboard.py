"""`hwl onboard` on the harness side: every measurement is a campaign job in the store.

:class:`CampaignDevice` is the ``measure(archs)`` callable of the onboarding loop
(``predictors.onboard.loop``): each batch becomes a small campaign (named
``onboard:<device>:<space>:<hash of the batch>``) on the one device, run by the coordinator like
any other, so results, attempts, retries, quarantine and fingerprints are stored as usual.

Resuming is reading the store: :func:`onboard` first finishes any onboarding campaign of the
device left with queued or running jobs (an interrupted batch), then takes every latency the
store holds for the device measured with the same settings (``DeviceProfile.identity``, from any
campaign) as already measured and every failed onboarding job as failed, and goes on from there.
The method pretrains on the public tables shipped with hwl plus every other device in the store
that covers enough architectures.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.campaign import CampaignSpec, differing_keys, onboarding_prefix, plan_campaign, refresh_reach
from harness.campaign import refuse_imported_names
from harness.coordinator import CoordinatorOptions, run_campaign
from harness.device_settings import measured_settings
from harness.errors import CampaignError, DeviceQuarantined
from harness.paths import written_together
from harness.pretrained_cache import pretrained
from harness.profiles import DeviceProfile, load_profiles, profile_from_dict
from harness.ray_cluster import joined, ray_session
from harness.store import DRIFT_FLAG, Store
from harness.store import drifted_counts as drifted_per_device
from harness.text import count
from predictors import data, registry
from predictors.base import UnusableMeasurementsError
from predictors.onboard import OnboardLoop, OnboardResult, OnboardSettings, loop_ks, prepare_method
from predictors.onboard import report as onboard_report
from spaces import get_space, resolve_archs

log = logging.getLogger(__name__)

MIN_TRAIN_ARCHS = 100  # a store device with fewer latencies adds more gaps than information


class CampaignDevice:
    """``measure(archs) -> {arch: latency_ms}`` through a real campaign on one device.

    Parameters
    ----------
    store : Store
        Open (read-write) store; the campaigns and results go there.
    profile : DeviceProfile
        The device (as loaded from its profile name or file).
    space : str
    measurement : str, optional
        ``quick`` / ``standard`` overriding the profile's measurement profile.
    options : CoordinatorOptions, optional
    on_progress : callable, optional
        Passed to the coordinator (per-device snapshot about once a second).
    before_run : callable, optional
        Called before each batch's campaign runs (:func:`onboard` starts its Ray there).

    Raises
    ------
    DeviceQuarantined
        (from a call) the device was quarantined and gave no latency for the batch.
    """

    def __init__(self, store: Store, profile: DeviceProfile, space: str, *, measurement: str | None = None,
                 options: CoordinatorOptions | None = None, on_progress=None, before_run=None):
        self.store = store
        self.profile = profile
        self.space = space
        self.measurement = measurement
        self.options = options or CoordinatorOptions()
        self.on_progress = on_progress
        self.before_run = before_run
        self.campaigns: list[str] = []
        self.remeasured: list = []  # archs measured again because their latency was taken while the device drifted
        self.drifted_twice: list = []  # of those, the ones whose second measurement drifted too

    def __call__(self, archs) -> dict:
        """The batch's latencies; an arch measured while the device drifted (``canary_drift``) is measured
        once more right away (if that drifts too, the median of both is kept: see :func:`latencies_by_arch`)."""
        got, rows = self._run(archs)
        drifted = [a for a in only_drifted(self.space, rows) if a in set(archs)]  # none of them is in got
        if drifted:
            log.warning("%s: %d of the batch's %s measured while the device drifted (canary_drift); measuring "
                        "%s again (more device time, not more of the budget)", self.profile.name, len(drifted),
                        count(len(archs), "arch was", "archs were"), "it" if len(drifted) == 1 else "them")
            got.update(self.again(drifted))
        return got

    def again(self, archs) -> dict:
        """Measure ``archs`` again, in a campaign of its own (the batch's own campaign is done), for
        latencies measured while the device drifted; warns about those that drift again."""
        self.remeasured.extend(archs)
        got, rows = self._run(archs, again=True)
        still = [a for a in drifted_counts(self.space, rows) if a in set(archs)]
        if still:  # listed last, with '; ' as --archs takes them: an FBNet key's own commas ran them together
            self.drifted_twice.extend(still)
            log.warning("%s: %s again when measured again (canary_drift), kept at the median of both, "
                        "as a drift canary that moves on every batch says more about its own noise than about the "
                        "device's speed: %s", self.profile.name, count(len(still), "arch drifted", "archs drifted"),
                        "; ".join(map(str, still)))
        return got

    def _run(self, archs, *, again: bool = False) -> tuple[dict, pd.DataFrame]:
        """Measure ``archs`` in a campaign: (their latencies, every ``comparable_rows`` row of the device)."""
        keys = [str(a) for a in archs]
        measuring = self.profile.with_measurement(self.measurement)
        name = batch_name(measuring, self.space, keys)
        if again:  # a new campaign, not the finished one of the same archs
            name = next(f"{name}:again{n}" for n in range(1, 10 ** 6) if self.store.campaign(f"{name}:again{n}")
                        is None)
        spec = CampaignSpec(space=self.space, archs=tuple(keys), devices=(self.profile.source,), seed=0,
                            measurement=self.measurement, name=name)
        cid, plan, _ = plan_campaign(self.store, spec)
        if self.before_run is not None:
            self.before_run()
        summary = run_campaign(self.store, cid, self.options, on_progress=self.on_progress)
        self.campaigns.append(plan.name)
        rows, _ = comparable_rows(self.store, self.space, measuring)
        got = latencies_by_arch(self.store, self.space, rows, archs)
        stop_if_quarantined(summary, self.profile.name)
        return got, rows


def stop_if_quarantined(summary: dict, device: str) -> None:
    """A batch whose device was quarantined stops the onboarding, though some of it was measured (stored, and read
    again on resume): going on counted the rest as failed and planned the next batch on the lost device, which
    waited for its hello again before saying the same."""
    state = summary["devices"].get(device, {})
    if state.get("state") == "quarantined":
        raise DeviceQuarantined(f"device {device} was quarantined during onboarding: "
                                f"{str(state.get('error')).rstrip('.')}; fix it, then run the same `hwl onboard` "
                                "again to resume (what it measured is in the store)", device=device)


def batch_name(profile: DeviceProfile, space: str, keys) -> str:
    """The campaign name of one batch: the same batch with other settings (``DeviceProfile.identity``) is
    another campaign, not one that "already exists with other settings"."""
    text = "\n".join([*keys, json.dumps(profile.identity(), sort_keys=True)])
    return onboarding_prefix(profile.name, space) + hashlib.sha256(text.encode()).hexdigest()[:10]


def measured_latencies(store: Store, space: str, profile: DeviceProfile, archs=None) -> dict:
    """arch -> latency_ms the store holds for ``profile``'s device measured with its settings (of ``archs``
    when given; see :func:`comparable_rows`)."""
    return latencies_by_arch(store, space, comparable_rows(store, space, profile)[0], archs)


def latencies_by_arch(store: Store, space: str, rows: pd.DataFrame, archs=None) -> dict:
    """arch -> median latency_ms of :func:`comparable_rows`' ``rows`` (of ``archs`` when given), leaving out
    latencies measured while the device drifted (``drifted``): the fit would take a moved speed as the arch's.
    An arch measured twice or more, every time while a drift canary was off (``drifted_counts``), keeps the
    median of those: measuring it yet again would spend the device's time on the canary's own noise."""
    twice = {a for a, n in drifted_counts(space, rows).items() if n >= 2}
    if len(rows):
        twice_rows = _drifted_keys(space, rows).isin(twice).reindex(rows.index, fill_value=False).astype(bool)
        rows = rows[~rows["drifted"] | twice_rows]
    if len(rows) == 0:
        return {}
    frame = data.from_frame(rows, space, source=f"store:{store.path.name}", where=f"store {store.path}")
    series = frame.groupby("arch", sort=False)["latency_ms"].median()
    if archs is not None:
        series = series[series.index.isin(list(archs))]
    return {k: float(v) for k, v in series.items()}


def drifted_counts(space: str, rows: pd.DataFrame) -> Counter:
    """Arch -> how many latencies it has in :func:`comparable_rows`' ``rows``, for the archs whose every
    latency there carries ``canary_drift``."""
    keys = _drifted_keys(space, rows)
    if len(keys) == 0:
        return Counter()
    clean = set(resolve_archs(space, list(rows.loc[~rows["drifted"], "arch"]))) if (~rows["drifted"]).any() else set()
    return Counter(a for a in keys if a not in clean)


def _drifted_keys(space: str, rows: pd.DataFrame) -> pd.Series:
    """The architecture keys of ``rows``' drifted rows, a row each (``resolve_archs`` alone drops repeats)."""
    flagged = rows.loc[rows["drifted"], "arch"]
    keys = {value: resolve_archs(space, [value])[0] for value in set(flagged)}
    return flagged.map(keys)


def drift_record(store: Store, space: str, device: str, rows: pd.DataFrame) -> tuple[list, list]:
    """(archs the device's onboarding measured again after a drifted latency, those of them that drifted again),
    from the store: the whole onboarding's, every run of it (a resumed one listed only its own run's).
    ``rows``: :func:`comparable_rows`' rows, so an onboarding with other settings is not counted."""
    measured_again = {str(a) for (a,) in store.db.execute(
        "SELECT DISTINCT j.arch FROM jobs j JOIN campaigns c ON c.id = j.campaign_id WHERE c.name LIKE ? "
        "AND c.name LIKE '%:again%' AND j.device = ?", (onboarding_prefix(device, space) + "%", device))}
    if not measured_again or not rows["drifted"].any():
        return [], []
    again = set(resolve_archs(space, sorted(measured_again)))
    drifted = list(dict.fromkeys(_drifted_keys(space, rows)))  # once each, in the store's order
    twice = drifted_counts(space, rows)
    return [a for a in drifted if a in again], [a for a in drifted if a in again and twice.get(a, 0) >= 2]


def only_drifted(space: str, rows: pd.DataFrame) -> list:
    """Archs to measure again: every latency of theirs carries ``canary_drift``, and there is only one."""
    return [a for a, n in drifted_counts(space, rows).items() if n == 1]


def comparable_rows(store: Store, space: str, profile: DeviceProfile) -> tuple[pd.DataFrame, dict]:
    """The device's accepted latencies measured with ``profile``'s identity (``DeviceProfile.identity``,
    as campaigns compare profiles), and what was left out: ``{differing settings: latencies}``.
    Column ``drifted``: the result carries ``canary_drift`` (:func:`latencies_by_arch` leaves it out).

    Another campaign's measurements of the same device name on other threads, cores or runtime
    options are another device's latencies; imported rows carry no settings, so they are left out too.
    """
    rows = store.query(
        "SELECT j.arch, j.device, r.label_ms AS latency_ms, r.flags, d.profile_json FROM results r "
        "JOIN jobs j ON r.job_id = j.id JOIN campaigns c ON j.campaign_id = c.id JOIN campaign_devices d "
        "ON d.campaign_id = j.campaign_id AND d.device = j.device WHERE c.space = ? AND j.device = ? "
        "AND r.accepted = 1 AND r.label_ms IS NOT NULL", (space, profile.name))
    mine = profile.identity()
    differs = {pj: _differing_settings(pj, mine) for pj in rows["profile_json"].unique()}
    reason = rows["profile_json"].map(differs)
    left_out = {k: int(v) for k, v in reason[reason != ""].value_counts(sort=False).items()}
    (imported,) = store.db.execute("SELECT count(*) FROM imported WHERE space = ? AND device = ?",
                                   (space, profile.name)).fetchone()
    if imported:
        left_out["imported, settings unknown"] = int(imported)
    rows["drifted"] = rows["flags"].map(lambda f: DRIFT_FLAG in f.split(",")).astype(bool)
    return rows.loc[reason == "", ["arch", "device", "latency_ms", "drifted"]], left_out


def _differing_settings(profile_json: str, mine: dict) -> str:
    """``runtime.cores, runtime.threads``: the identity keys a stored profile differs in ('' for none)."""
    return ", ".join(differing_keys(profile_from_dict(json.loads(profile_json)).identity(), mine))


def warn_remeasuring_drifted(device: str, n_drifted: int, n_again: int) -> None:
    """The store's archs whose only latency a drift canary flagged, about to be measured again."""
    log.warning("%s: %s of the store %s measured while the device drifted (canary_drift); measuring %d of them "
                "again (they count against the budget)", device, count(n_drifted, "arch", "archs"),
                "was" if n_drifted == 1 else "were", n_again)


def warn_left_out(left_out: dict, device: str) -> None:
    """A warning naming the device's latencies not used, and why."""
    if left_out:
        reasons = "; ".join(f"{n} with {why}" if why.startswith("imported") else f"{n} where {why} differ"
                            for why, n in left_out.items())
        log.warning("%s: left out %s of the store measured with other settings than the profile's (%s)",
                    device, count(sum(left_out.values()), "latency", "latencies"), reasons)


def failed_archs(store: Store, space: str, profile: DeviceProfile) -> list:
    """Archs whose onboarding job on the device failed for good with ``profile``'s settings."""
    device = profile.name
    rows = store.db.execute(
        "SELECT DISTINCT j.arch, d.profile_json FROM jobs j JOIN campaigns c ON j.campaign_id = c.id "
        "JOIN campaign_devices d ON d.campaign_id = j.campaign_id AND d.device = j.device WHERE c.space = ? AND "
        "j.device = ? AND j.state = 'failed' AND c.name LIKE ?",
        (space, device, onboarding_prefix(device, space) + "%")).fetchall()
    mine = profile.identity()
    archs = [r[0] for r in rows if not _differing_settings(r[1], mine)]
    return resolve_archs(space, archs) if archs else []


def unfinished_campaigns(store: Store, space: str, device: str) -> list[int]:
    """Ids of the device's onboarding campaigns with queued or running jobs (an interrupted batch)."""
    # the device's own jobs: LIKE reads a '_' in the name as any character, so pi_1's prefix matched pi-1's batches
    rows = store.db.execute(
        "SELECT DISTINCT c.id FROM campaigns c JOIN jobs j ON j.campaign_id = c.id WHERE c.name LIKE ? AND "
        "j.device = ? AND j.state IN ('queued', 'running') ORDER BY c.id",
        (onboarding_prefix(device, space) + "%", device)).fetchall()
    return [r[0] for r in rows]


def _campaign_name(store: Store, campaign_id: int) -> str:
    return store.db.execute("SELECT name FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]


def pretrain_tables(space: str, store: Store | None, exclude: str, *, min_archs: int = MIN_TRAIN_ARCHS) -> dict:
    """Device -> latency Series: the shipped public tables plus the store's other devices.

    A store device needs ``min_archs`` latencies to count. A store device measured with more than one setting
    is left out (with a warning): the store's table is the median over its settings, e.g. batch 1 and 8 mixed.
    A device of the store and of the public tables is one device when their latencies agree (an import of the
    public tables); otherwise one of them is taken whole (:func:`_one_device_per_name`), never a mix of rows.
    """
    frames = [data.help_table(space)]
    mixed: list[str] = []
    if store is not None:
        labels = store.latency_labels(space)  # once, for the table and the drift warning below
        raw = labels.drop(columns="drifted")
        raw = raw[raw["latency_ms"].notna() & (raw["device"] != exclude)]
        mixed = sorted(d for d in raw["device"].unique() if len(measured_settings(store, space, d)) > 1)
        if mixed:
            log.warning("not pretraining on %s: measured with more than one setting in the store (threads, cores, "
                        "runtime options or batch size), whose median would mix them", ", ".join(mixed))
        if len(raw):
            stored = data.from_frame(raw, space, source=f"store:{store.path.name}", where=f"store {store.path}")
            frames = _one_device_per_name(frames[0], stored, store.path, min_archs)
    table = pd.concat(frames, ignore_index=True).drop_duplicates(["arch", "device"], keep="last")
    table = table[(table["device"] != exclude) & ~table["device"].isin(mixed)]
    counts = table.groupby("device")["arch"].count()
    small = sorted(counts[counts < min_archs].index)
    if small:
        log.info("not pretraining on %s: fewer than %d latencies each", ", ".join(small), min_archs)
    if store is not None:  # the store's devices pretrained on, as `hwl train --store` says of its table
        data.warn_drifted(drifted_per_device(labels), f"pretraining on store {store.path}",
                          devices=set(raw["device"]) - set(mixed) - set(small))
    return data.by_device(table[~table["device"].isin(small)])


def _one_device_per_name(public: pd.DataFrame, stored: pd.DataFrame, path, min_archs: int) -> list[pd.DataFrame]:
    """The public and the store's tables with each device name from one of them: a store device named as a
    public one (a lab's own 'raspi4') whose latencies differ on the archs both hold is another machine, and
    their rows merged arch by arch would be one pretraining device made of two. The store's is taken whole when
    it has ``min_archs`` latencies (it is the lab's), else the public one; a warning says which."""
    shared = public.merge(stored, on=["arch", "device"], suffixes=("_public", "_store"))
    # rtol: a copy of the public table that went through float32 (HELP's .pt files) is still that table
    differ = ~np.isclose(shared["latency_ms_public"], shared["latency_ms_store"], rtol=1e-6, atol=0.0)
    clashing = sorted(pd.unique(shared.loc[differ, "device"]))
    if not clashing:
        return [public, stored]
    sizes = stored[stored["device"].isin(clashing)].groupby("device")["arch"].count()
    theirs = [d for d in clashing if sizes[d] >= min_archs]
    public_wins = [d for d in clashing if sizes[d] < min_archs]
    said = [f"{d}: the store's ({count(int(sizes[d]), 'latency', 'latencies')})" for d in theirs]
    said += [f"{d}: the public table's (the store has {count(int(sizes[d]), 'latency', 'latencies')}, fewer than "
             f"{min_archs})" for d in public_wins]
    log.warning("store %s and the public tables both name %s, with other latencies: another machine under the same "
                "name, so each is pretrained on from one table, %s; %s to pretrain on both", path, ", ".join(clashing),
                "; ".join(said), _how_to_rename(stored[stored["device"].isin(clashing)]))
    return [public[~public["device"].isin(theirs)], stored[~stored["device"].isin(public_wins)]]


def _how_to_rename(rows: pd.DataFrame) -> str:
    """How the store's rows of a device named as a public one get a name of their own: a measured device's profile
    is renamed, an imported table is imported again under another name (renaming a profile changes nothing there)."""
    imported = rows["source"].astype(str).str.startswith("imported:")
    ways = ["give the profile a name of its own"] if (~imported).any() else []
    if imported.any():
        ways.append("import the table under a name of its own (hwl data import --device NAME)")
    return ", or ".join(ways)


def default_candidates(space: str, tables: dict) -> list:
    """The whole NB201 space; for FBNet (9^22 archs) the archs of the public tables."""
    if space == "nb201":
        return resolve_archs(space, "all")
    return sorted({a for s in tables.values() for a in s.index})


@contextlib.contextmanager
def ray_for(profile: DeviceProfile, options: CoordinatorOptions):
    """A function that starts one Ray session for every batch of an onboarding (the coordinator uses
    a running Ray as is) at its first call, held until the end of the ``with`` block: an onboarding
    the store already answers starts no Ray (seconds of start and stop). Like a campaign's, the
    session keeps this process and Ray off the cores a local device measures on."""
    cores = set(profile.runtime.cores or ()) if profile.host.transport == "local" else set()
    started = []
    with contextlib.ExitStack() as held:
        def start():
            if not started:
                if options.address is None:  # on a cluster the device's own Ray node reaches it, maybe not this one
                    check_reach(profile)
                held.enter_context(ray_session(address=options.address, num_cpus=options.num_cpus,
                                               hosts={profile.host.resource}, temp_dir=options.ray_temp_dir,
                                               avoid_cores=cores if options.pin_service_cores else set()))
                started.append(True)

        yield start


def check_reach(profile: DeviceProfile) -> None:
    """An ssh device is logged in to once before its first batch: one that cannot be reached (down, a wrong key, a
    changed host key) is one line naming it, at once, not a campaign that waits for its hello (2 minutes)
    and quarantines it in a warning and an error that say it twice."""
    if profile.host.transport != "ssh":
        return
    from harness.remote.connect import host_for
    from harness.remote.errors import RemoteError

    try:
        with host_for(profile):
            pass
    except RemoteError as exc:
        raise CampaignError(f"{str(exc).rstrip('.')}; nothing was measured on it in this run: run the same "
                            "`hwl onboard` again once it answers") from None


@dataclass
class Onboarding:
    """What :func:`onboard` returns: the loop's result, the report and the files written."""

    result: OnboardResult
    report: dict
    table: pd.DataFrame
    files: dict


def onboard(*, device: str, space: str, store, budget: int = 30, target_rho: float | None = None,
            out=None, table_out=None, report_out=None, method: str | None = None, candidates=None,
            seed: int = 0, measurement: str | None = None, options: CoordinatorOptions | None = None,
            settings: OnboardSettings | None = None, on_step=None, on_progress=None) -> Onboarding:
    """Onboard ``device`` (profile name or file): measure few, adapt, stop when sure; write the files.

    Parameters
    ----------
    device : str
        Device profile name or ``.toml`` path.
    space : str
    store : path
        Store file (created when missing); resumes what it already holds for the device.
    budget, target_rho :
        Measurements in all, and the estimated rho that stops the loop early.
    out, table_out, report_out : path, optional
        Adapted predictor (``torch.save``, as ``hwl adapt`` writes), predicted table (Parquet)
        and report (JSON).
    method : str, optional
        Few-shot method (default ``registry.RECOMMENDED``).
    candidates : str or list, optional
        Architecture selection the predictor covers (default: :func:`default_candidates`).
    settings : OnboardSettings, optional
        Loop settings; ``budget``, ``target_rho`` and ``seed`` override its fields.
    """
    get_space(space)
    profile = load_profiles([device])[0]
    store_path = Path(store).expanduser()
    options = options or CoordinatorOptions(artifact_dir=store_path.parent / f"{store_path.stem}-artifacts")
    options = replace(options, say_quarantine=False)  # a quarantine stops it, in one error (stop_if_quarantined)
    settings = replace(settings or OnboardSettings(), budget=int(budget), target_rho=target_rho, seed=int(seed))
    method_name = registry.chosen(method)
    registry.get_class(method_name, latency_only=True)  # an unknown name fails before anything is written
    if method_name in registry.RANK_ONLY:
        raise CampaignError(f"method {method_name!r} ranks architectures but does not predict this device's "
                            "latency in ms, which onboarding writes; use one of "
                            f"{', '.join(registry.latency_methods())}")
    # Bad candidates or measurement settings fail here, before a store is made.
    picked = None if candidates is None else resolve_archs(space, candidates, seed=seed)
    measuring = profile.with_measurement(measurement)  # the settings this onboarding measures with
    # a cluster given by --address is joined before the store file is made: a wrong one leaves nothing
    with joined(options.address, hosts={profile.host.resource}), \
            Store(options.checked_store(store, [measuring])) as st:
        # its first batch would be refused: said before the pretraining, and before a warning that the
        # imported latencies are left out, as if onboarding went on without them
        refuse_imported_names(st, space, [measuring])
        tables = pretrain_tables(space, st, profile.name)
        if not tables:
            raise CampaignError(f"no train device with latencies for {space}: nothing to pretrain on")
        keys = default_candidates(space, tables) if picked is None else picked
        with ray_for(profile, options) as start_ray:
            measure = CampaignDevice(st, profile, space, measurement=measurement, options=options,
                                     on_progress=on_progress, before_run=start_ray)
            unfinished = unfinished_campaigns(st, space, profile.name)
            # what the store held before this run: an interrupted batch finished now is spent by this run, not
            # "already in the store" (the summary said 3 already there where none of them had been measured)
            held_before = (len(latencies_by_arch(st, space, comparable_rows(st, space, measuring)[0])) if unfinished
                           else None)
            for cid in unfinished:
                log.info("finishing interrupted onboarding campaign %d", cid)
                refresh_reach(st, cid, [measuring])  # the device may have moved
                start_ray()
                stop_if_quarantined(run_campaign(st, cid, options, on_progress=on_progress), profile.name)
                measure.campaigns.append(_campaign_name(st, cid))  # the report lists every batch this run ran
            rows, left_out = comparable_rows(st, space, measuring)  # one read of the device's results
            warn_left_out(left_out, profile.name)
            measured = latencies_by_arch(st, space, rows)
            failed = [a for a in failed_archs(st, space, measuring) if a not in measured]
            resumed_from = len(measured) if held_before is None else min(held_before, len(measured))
            drifted = [a for a in only_drifted(space, rows) if a not in failed]
            covered = dict.fromkeys([*keys, *measured, *drifted])  # the loop's candidates, as it will get them
            if len(covered) < 2:  # refused by the loop too, but only after measuring the drifted and pretraining
                raise CampaignError(f"--candidates names {count(len(covered), 'architecture', 'architectures')} and "
                                    f"the store holds no other one measured on {profile.name}: a predictor needs at "
                                    "least 2 to rank; give more (a list, random:N)")
            room = settings.budget - len(measured) - len(failed)
            if drifted and room > 0:  # measured first, in a batch of their own: the fit takes no moved speed
                warn_remeasuring_drifted(profile.name, len(drifted), min(room, len(drifted)))
                measured.update(measure.again(drifted[:room]))
                # one whose measurement failed this time is failed, as in a batch: the loop would pick it again
                failed += [a for a in drifted[:room] if a not in measured]
            elif drifted:
                log.warning("%s: left out %s of the store measured while the device drifted (canary_drift); "
                            "the budget leaves no room to measure %s again", profile.name,
                            count(len(drifted), "arch", "archs"), "it" if len(drifted) == 1 else "them")
            # Measured archs outside the candidates (an earlier campaign) get a row in the table too.
            keys = list(dict.fromkeys(list(keys) + list(measured)))
            log.info("%s: %s in the store already, %s", profile.name, count(len(measured), "latency", "latencies"),
                     count(len(failed), "failed arch", "failed archs"))
            model = registry.get_method(method_name)
            if "random_state" in model.get_params():  # not every method takes a seed
                model.set_params(random_state=seed)
            model = prepare_method(model, loop_ks(settings, len(measured)))
            try:
                model = pretrained(model, space, tables)
            except ValueError as exc:  # tables this method cannot use (HELP without its reference archs), as in train
                raise CampaignError(f"method {method_name} cannot pretrain on the public tables and this store's "
                                    f"devices: {exc}") from None
            loop = OnboardLoop(model, space, keys, measure, settings, tables=tables, device=profile.name,
                               measured=measured, failed=failed, on_step=on_step)
            try:
                result = loop.run()
            except UnusableMeasurementsError as exc:  # hwl_ridge on archs no table holds: the store keeps them
                raise CampaignError(f"method {method_name} cannot adapt to {profile.name}: {exc}; the measurements "
                                    "are in the store, for another --method") from None
            remeasured, drifted_twice = drift_record(st, space, profile.name, comparable_rows(st, space, measuring)[0])
    table = onboard_report.predicted_table(loop, space, profile.name)
    report = onboard_report.build_report(loop, result, space=space, device=profile.name, method=method_name,
                                         tables=tables, resumed_from=resumed_from, campaigns=measure.campaigns,
                                         store=str(store))
    report["remeasured_after_drift"] = [str(a) for a in remeasured]
    report["drifted_twice"] = [str(a) for a in drifted_twice]
    files = {k: Path(p).expanduser() for k, p in (("model", out), ("table", table_out), ("report", report_out))
             if p is not None}
    # one set: a kill while they are written never leaves the new model beside the last run's table or report
    with written_together(files.values()) as partials:
        partial = dict(zip(files, partials))
        if "model" in partial:
            from harness.model_file import save_model  # the model file format of `hwl train/adapt`

            save_model(partial["model"], result.adapted, method=method_name, space=space,
                       train_devices=list(tables), device=profile.name)
        if "table" in partial:
            partial["table"].parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(partial["table"], index=False)
        if "report" in partial:
            onboard_report.write_report(report, partial["report"])
    report["files"] = files = {k: str(p) for k, p in files.items()}
    return Onboarding(result, report, table, files)


__all__ = ["CampaignDevice", "DRIFT_FLAG", "MIN_TRAIN_ARCHS", "Onboarding", "batch_name", "comparable_rows",
           "default_candidates", "failed_archs", "latencies_by_arch", "measured_latencies", "onboard", "only_drifted",
           "pretrain_tables", "ray_for", "unfinished_campaigns", "warn_left_out"]
