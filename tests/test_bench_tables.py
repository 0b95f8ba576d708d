"""What the benchmarks' tables show where a number is missing: never a failed process's time, never a traceback."""
import sys

from tests.bench_scripts import SCRIPTS, load


def _script(name: str):
    return load(next(s for s in SCRIPTS if s.name == name))


def test_bench_scale_times_only_a_process_that_succeeded(capsys):
    """bench_scale ignored `hwl --help`'s exit code: a broken hwl's failure was timed as its start-up."""
    seconds_of = _script("bench_scale").seconds_of
    assert seconds_of([sys.executable, "-c", "import sys; sys.exit('hwl is broken')"]) is None
    assert "hwl is broken" in capsys.readouterr().err
    assert seconds_of([sys.executable, "-c", "pass"]) > 0


def test_bench_campaign_overhead_says_n_a_where_nothing_was_measured():
    """A run whose agents spent no time measuring has no ratio (None in its JSON): its table row ended in
    "TypeError: unsupported format string passed to NoneType.__format__" after the whole campaign had run."""
    from rich.console import Console

    run = {"label": "warm", "measurements": 0, "wall_s": 4.2, "inside_s": 0.0, "actor_s_without_lock_wait": 0.1,
           "ratio": None, "ratio_after_ray_start": None}
    console = Console(record=True, width=200)
    console.print(_script("bench_campaign_overhead").table_of([run], "overhead"))
    row = next(line for line in console.export_text().splitlines() if "warm" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == \
        ["warm", "0", "4.2 s", "0.0 s", "0.1 s", "n/a", "n/a", "<= 1.15"]
