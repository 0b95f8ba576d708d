"""`scripts/bench_* --help`: each script's description is its docstring's whole first paragraph."""
import re
import sys

import pytest

from tests.bench_scripts import SCRIPTS, load


def _words(text: str) -> str:
    """The text as one line: argparse wraps it anew, also after a hyphen ('fine-' / 'tune')."""
    return re.sub(r"\s+", " ", re.sub(r"-\n\s*", "-", text)).strip()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_shows_the_whole_first_paragraph(script, monkeypatch, capsys):
    """bench_accuracy's help stopped at 'and the' (the docstring's first line, a sentence cut where it wraps)."""
    module = load(script)
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 0
    first = _words(module.__doc__.split("\n\n")[0])
    assert first in _words(capsys.readouterr().out), script.name


@pytest.mark.parametrize("name, argv, said", [
    ("bench_onboard", ["--method", "", "--trials", "0"], "argument --method: unknown method ''; valid methods: "),
    ("bench_onboard_uncertainty", ["--method", "", "--tasks", ""], "argument --method: unknown method ''; valid "),
    ("bench_predictors", ["--methods", "", "--tasks", "N0"], "unknown method ''; valid methods: "),
    ("bench_gpu", ["--sections", "", "--device", "cpu", "--n", "1"], "unknown section(s) ''; valid: eager_1, "),
])
def test_an_empty_choice_is_refused_not_read_as_the_default(name, argv, said, tmp_path, capsys):
    """`--method "$METHOD"` with METHOD unset ran the recommended method (bench_onboard's summary, its JSON),
    `--methods ''` every default method and `--sections ''` every section; the hwl commands refuse it."""
    script = SCRIPTS[0].parent / name
    with pytest.raises(SystemExit) as stop:
        load(script).main([*argv, "--json", str(tmp_path / "out.json")])
    assert stop.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("name, says", [
    ("bench_dispatch", "default 200, about 4 minutes on a shared 2-core machine, about 1 s a job"),
    ("bench_agent_repro", "default 50: about 15 minutes with the standard profile"),
    ("bench_agent_overhead", "default 20: with 2 pairs, about 11 minutes with the standard profile"),
    ("bench_tvm", "default 20: about 9 minutes on a shared 2-core machine"),
    ("bench_campaign_overhead", "default 200: over 10 minutes; 10 took 7.5 minutes on a shared 2-core machine"),
    ("bench_predictors", "the defaults (7 tasks) run over 10 minutes; one trial took 4.3 minutes on N0"),
    ("bench_accuracy", "the defaults run about 45 s on a shared 2-core machine"),
    ("bench_soak", "The defaults run over 10 minutes: about 25 on a shared 2-core machine"),
])
def test_a_long_default_says_how_long_it_runs(name, says, monkeypatch, capsys):
    """bench_dispatch ran 5,000 jobs by default, about 1 s each on a shared 2-core machine (1.5 hours), and said
    nothing of it; its default is 200 jobs now. bench_agent_repro's and bench_agent_overhead's defaults run 15 and 11
    minutes there, which their help did not say either, nor did bench_tvm's, bench_campaign_overhead's,
    bench_predictors', bench_accuracy's and bench_soak's (timed there, or a part of them timed)."""
    script = next(s for s in SCRIPTS if s.name == name)
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit):
        load(script).main()
    assert says in _words(capsys.readouterr().out)
