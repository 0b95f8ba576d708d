"""`hwl train`: pretrain a few-shot latency method on train devices and save it (``harness.model_file``)."""
from __future__ import annotations

from pathlib import Path

from harness.cli.common import (add_table_flags, comma_list, messages_to, non_negative_int, positive_int,
                                user_path)
from harness.errors import UserError
from harness.model_file import save_model
from harness.paths import check_outputs
from predictors import registry


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="pretrain a few-shot latency predictor on train devices")
    p.add_argument("--space", choices=["nb201", "fbnet"], required=True, help="search space of the table")
    p.add_argument("--devices", help="comma-separated train devices (default: every device of the table)")
    p.add_argument("--method", help=f"method name (default: {registry.RECOMMENDED}); one of "
                                    f"{', '.join(registry.latency_methods())}")
    add_table_flags(p, what="train table (default: HELP's shipped table)")
    p.add_argument("--n-pretrain", type=positive_int, help="pretrain on N random archs per device (default: all)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of --n-pretrain draws and of the method (default 0)")
    p.add_argument("--out", type=user_path,
                   required=True, help="model file to write (e.g. model.pt): torch.save of the whole "
                   "method object; adapt and predict load only hwl's own predictor classes from it")
    p.set_defaults(func=run)


def run(args) -> int:
    path = train(space=args.space, devices=comma_list(args.devices), method=args.method, table=args.table,
                 store=args.store, n_pretrain=args.n_pretrain, seed=args.seed, out=args.out)
    print(f"wrote {path}", file=messages_to(path))
    return 0


def train(*, space: str, out, devices=None, method: str | None = None, table=None, store=None,
          n_pretrain: int | None = None, seed: int = 0) -> Path:
    """Pretrain ``method`` on ``devices`` of a table and save it to ``out``."""
    name = registry.chosen(method)
    registry.get_class(name, latency_only=True)  # an unknown name fails before any table is read
    if name in registry.RANK_ONLY:  # as predict/search/onboard refuse it, but before the pretraining, not after
        raise UserError(f"method {name!r} ranks architectures but does not predict a device's latency in ms, "
                        "which `hwl predict` writes from the model file; score it with "
                        f"`hwl evaluate --method {name}`, or train one of {', '.join(registry.latency_methods())}")
    check_outputs({"--out": out}, {"--table": table, "--store": store})
    # pandas and scikit-learn: imported once the flags are checked, not for `hwl --help` or a refused flag
    from harness.device_settings import check_one_setting
    from harness.unanswered_devices import read_answered
    from predictors import data
    from predictors.base import TrainTables
    from predictors.protocol import pretrain_sample

    # a device the store measures but has no label of is not 'unknown'
    frame = read_answered(store, space, devices, lambda: data.load_table(space, path=table, store=store,
                                                                         devices=devices))
    full = data.by_device(frame, devices)
    if store is not None:  # the store's table is a median over every setting a device was measured with
        check_one_setting(store, space, list(full))
    sample = pretrain_sample(full, n_pretrain, seed) if n_pretrain else TrainTables(full, full)
    model = registry.get_method(name)
    if "random_state" in model.get_params():
        model.set_params(random_state=seed)
    try:
        model.pretrain(space, sample)
    except ValueError as exc:  # a table this method cannot use (HELP without its reference archs), as in adapt
        raise UserError(f"method {name} cannot pretrain on this table: {exc}") from None
    return save_model(out, model, method=name, space=space, train_devices=list(full))
