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
