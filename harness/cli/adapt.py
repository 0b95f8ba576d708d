"""`hwl adapt`: adapt a pretrained model to a new device with its few measurements."""
from __future__ import annotations

import logging

from harness.cli.common import add_table_flags, messages_to, read_in_model_space, user_path
from harness.errors import UserError
from harness.model_file import load_model, save_model
from harness.paths import check_outputs
from harness.text import count

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("adapt", help="adapt a pretrained predictor to a new device (few measurements)")
    p.add_argument("model", type=user_path, help="model file from `hwl train`")
    p.add_argument("--device", required=True, help="the new device's name in the measurements")
    add_table_flags(p, what="measurements", file_flag="--measurements")
    p.add_argument("--out", type=user_path, required=True, help="adapted model file to write")
    p.set_defaults(func=run)


def run(args) -> int:
    path, n = adapt(model=args.model, device=args.device, measurements=args.table, store=args.store, out=args.out)
    print(f"adapted to {args.device} with {count(n, 'measurement', 'measurements')}; wrote {path}",
          file=messages_to(path))
    return 0


def adapt(*, model, device: str, out, measurements=None, store=None):
    """Adapt ``model`` to ``device`` on every measurement of it; returns (path, number used)."""
    from harness.device_settings import check_one_setting  # pandas: imported when used, not for `hwl --help`
    from harness.unanswered_devices import read_answered
    from predictors import data

    if measurements is None and store is None:
        raise UserError("give the new device's measurements: --measurements FILE or --store DB")
    check_outputs({"--out": out}, {"the model file": model, "--measurements": measurements, "--store": store})
    saved = load_model(model)
    if saved.get("device") is not None:  # some methods (tl_et) would tune on top of the first device
        raise UserError(f"{model} is already adapted to {saved['device']!r}; adapt the pretrained model from "
                        "`hwl train` (with all the measurements) instead, or, for a predictor from `hwl onboard`, "
                        "run that onboarding again with a larger --budget: it goes on from the measurements in its "
                        "store")
    if device in (saved.get("train_devices") or ()):  # `hwl train --store lab.db` takes every device of it
        log.warning("%s is one of %s's train devices: its own pretraining latencies feed the prediction, so the "
                    "predictor is not a few-shot one for it; for a device new to the model, train without it "
                    "(--devices)", device, model)
    # a device the store measures but has no label of is not 'unknown'
    table = read_answered(store, saved["space"], [device], lambda: read_in_model_space(
        model, saved["space"],
        lambda space: data.load_table(space, path=measurements, store=store, device=device, devices=[device])))
    series = data.by_device(table, [device])[device]
    if store is not None:  # the store's table is a median over every setting the device was measured with
        check_one_setting(store, saved["space"], [device])
    if series.nunique() < 2:  # every method would predict that latency for all archs, or rank them by its prior alone
        what = (f"{device} has one measurement" if len(series) == 1
                else f"{device}'s {len(series)} measurements are all {series.iloc[0]:g} ms")
        raise UserError(f"{what}: a predictor adapted on one latency predicts it for every architecture "
                        "(it ranks nothing); measure at least 2 architectures whose latencies differ")
    try:
        adapted = saved["model"].adapt(list(series.index), series.to_numpy(), device=device)
    except ValueError as exc:  # measurements this method cannot use (HELP without its reference archs)
        raise UserError(f"method {saved['method']} cannot adapt to {device}: {exc}") from None
    path = save_model(out, adapted, method=saved["method"], space=saved["space"],
                      train_devices=saved["train_devices"], device=device)
    return path, len(series)
