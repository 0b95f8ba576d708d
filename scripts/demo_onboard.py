"""The onboarding step of the demo: `hwl onboard` on a local device, checked against the campaign.

Onboards one local device into its own store (so the campaign's measurements of that device stay
unseen), through the real harness: the loop picks, measures, adapts and estimates rho on its
own. The campaign measured the same device on a few dozen archs a moment ago; those the
onboarding did not measure are a held-out check of its predicted table and of its estimate.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from harness.coordinator import CoordinatorOptions
from harness.onboard import onboard
from predictors.onboard.report import text_lines
from predictors.protocol import spearman
from spaces import nb201


def onboarding_table(device: str, campaign: pd.Series, out: Path, *, budget: int = 10, candidates: int = 300,
                     seed: int = 0) -> tuple[Table, list[str]]:
    """Onboard ``device`` with ``budget`` measurements; rho of its table on ``campaign``'s other archs.

    ``campaign``: latency_ms indexed by NB201 index (the campaign's accepted results). The
    candidates are ``candidates`` seeded random archs plus the campaign's, so the predicted table
    covers the check.
    """
    campaign = campaign.dropna()
    keys = list(dict.fromkeys(nb201.sample(candidates, seed) + [int(a) for a in campaign.index]))
    result = onboard(device=device, space="nb201", store=out / "onboard.db", budget=budget, seed=seed,
                     candidates=[str(k) for k in keys], measurement="quick",
                     table_out=out / f"onboard-{device}.parquet",
                     options=CoordinatorOptions(artifact_dir=out / "artifacts"))
    predicted = result.table.set_index("arch")["predicted_ms"]
    held = campaign.drop(index=[a for a in result.result.measured if a in campaign.index])
    rho = spearman(predicted.loc[held.index].to_numpy(), held.to_numpy())
    table = Table(title=f"hwl onboard {device}: {result.report['measurements_spent']} measurements")
    for col in ("estimated rho (loop)", "interval", f"rho on the campaign's other {len(held)} archs"):
        table.add_column(col, justify="right")
    table.add_row(*estimate_cells(result.report.get("estimated_rho")), f"{rho:.3f}")
    return table, text_lines(result.report)


def estimate_cells(estimate: dict | None) -> tuple[str, str]:
    """The table's estimate and interval; '-' where the loop made none (too few measurements: the lines under
    the table say why), where 'nan' and 'nan-nan' read like a failed computation."""
    if not estimate:
        return "-", "-"
    return f"{estimate['rho']:.3f}", f"{estimate['low']:.3f}-{estimate['high']:.3f}"
