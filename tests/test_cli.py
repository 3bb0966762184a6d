"""The command line as a user meets it: help text without markup, a version, clean errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from arca import __version__, cli

MARKUP = re.compile(r"``|`|:(func|class|meth|mod|attr|ref):|\.\. \w+::")


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("step", [None, *cli.STEPS])
def test_help_is_plain_text_and_documents_every_option(step, capsys):
    text = _help(["--help"] if step is None else [step, "--help"], capsys)
    assert not MARKUP.search(text), MARKUP.search(text)
    parser = cli.build_parser()
    if step is not None:
        sub = next(a for a in parser._actions if a.dest == "step").choices[step]
        for action in sub._actions:
            assert action.help, f"{step}: option {action.option_strings} has no help"
    else:
        assert all(name in text for name in cli.STEPS)


def test_version(capsys):
    assert _help(["--version"], capsys).strip() == f"arca-bench {__version__}"
    out = subprocess.run([sys.executable, "-m", "arca", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"arca-bench {__version__}"


def test_unknown_step_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["trian"])
    assert e.value.code == 2 and "invalid choice: 'trian'" in capsys.readouterr().err


def test_a_step_without_config_outside_the_repository_is_an_error_naming_the_fix(tmp_path):
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "arca", "show-config"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2, proc.stdout
    assert "--config configs/default.yaml" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_step_without_config_in_the_repository_reads_configs_default(tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("name: from_the_file\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["show-config"]) == 0
    assert "name: from_the_file" in capsys.readouterr().out


def _finished_run(tmp_path: Path) -> tuple[list[str], Path]:
    from arca.config import for_run, load_config, training_hash
    from arca.paths import paths_of

    config = tmp_path / "c.yaml"
    config.write_text(f"name: fin\npaths: {{results: {tmp_path / 'results'}}}\n")
    cfg = load_config([str(config)])
    run_id = cfg.run_ids()[0]
    run = paths_of(for_run(cfg, run_id)).run(run_id)
    run.adapter.mkdir(parents=True)
    info = {"run": run_id, "config_hash": training_hash(for_run(cfg, run_id))}
    (run.adapter / "arca_run.json").write_text(json.dumps(info))
    for p in (run.metrics, run.final_weights, run.curve):
        p.write_text("{}\n")
    return ["train", "--config", str(config), "--run", run_id], run.root


def test_train_on_a_finished_run_does_nothing_unless_forced(tmp_path, monkeypatch, caplog):
    import arca.train

    argv, root = _finished_run(tmp_path)
    calls = []
    monkeypatch.setattr(arca.train, "train_run", lambda cfg, run_id: calls.append(run_id))
    before = sorted(p.name for p in root.iterdir())
    with caplog.at_level("WARNING", logger="arca"):
        assert cli.main(argv) == 0
    assert calls == [] and "is finished" in caplog.text and "--force" in caplog.text
    assert sorted(p.name for p in root.iterdir()) == before
    assert cli.main([*argv, "--force"]) == 0
    assert calls == [argv[-1]] and not (root / "adapter").exists() and not (root / "metrics.jsonl").exists()


def test_train_on_a_run_finished_with_other_settings_asks_for_force(tmp_path, monkeypatch, capsys):
    import arca.train

    argv, root = _finished_run(tmp_path)
    (root / "adapter" / "arca_run.json").write_text(json.dumps({"config_hash": "other"}))
    monkeypatch.setattr(arca.train, "train_run", lambda cfg, run_id: pytest.fail("must not train"))
    assert cli.main(argv) == 2
    assert "pass --force" in capsys.readouterr().err


def test_docs_step_needs_no_config_and_reports_stale_regions(tmp_path, monkeypatch):
    ref = tmp_path / "results" / "reference" / "x"
    ref.mkdir(parents=True)
    (ref / "t.md").write_text("# Title\n\n| a |\n|---|\n| 1 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN arca:x/t -->\nold\n<!-- END arca:x/t -->\nend\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["docs", "--check"]) == 1
    assert cli.main(["docs"]) == 0
    assert readme.read_text() == "intro\n<!-- BEGIN arca:x/t -->\n| a |\n|---|\n| 1 |\n<!-- END arca:x/t -->\nend\n"
    assert cli.main(["docs", "--check"]) == 0


@pytest.mark.parametrize(
    "extra, named, hint",
    [
        (["--set", "credit.method=surprisl"], "--set credit.method=surprisl", "did you mean 'surprisal'?"),
        (["--config", "BAD"], "bad.yaml: key 'sweep.cells[0].method'", "did you mean 'arca'?"),
        (["--set", "train.lrr=1"], "unknown key 'train.lrr'", "did you mean 'lr'?"),
    ],
)
def test_config_errors_name_their_source_and_the_closest_name(tmp_path, capsys, extra, named, hint):
    bad = tmp_path / "bad.yaml"
    bad.write_text('sweep: {cells: [{method: arcaa, ranks: [2], label: "", overrides: {}, compare: []}]}\n')
    smoke = str(Path(cli.__file__).parents[2] / "configs" / "smoke.yaml")
    argv = ["show-config", "--config", smoke, *[str(bad) if a == "BAD" else a for a in extra]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and hint in err and "Traceback" not in err


# ----------------------------------------------------------------------------- errors
def _failing_step(monkeypatch, exc: BaseException) -> None:
    def step(cfg, args):
        raise exc

    monkeypatch.setattr(cli, "show_config", step)


def test_a_missing_input_is_one_line_and_exit_2(monkeypatch, capsys):
    from arca.config import MissingInputError

    _failing_step(monkeypatch, MissingInputError("aggregate: missing input /r/x/summary.json"))
    assert cli.main(["show-config"]) == 2
    assert capsys.readouterr().err == "error: aggregate: missing input /r/x/summary.json\n"


def test_the_projects_own_error_is_one_line_and_exit_2(monkeypatch, capsys):
    from arca.config import InputError

    _failing_step(monkeypatch, InputError("data.jsonl:3: malformed JSON line\n  (column 4)"))
    assert cli.main(["show-config"]) == 2
    assert capsys.readouterr().err == "error: data.jsonl:3: malformed JSON line (column 4)\n"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug"),
        json.JSONDecodeError("a bug", "{", 0),
        FloatingPointError("a bug"),
        FileNotFoundError(2, "No such file or directory", "/deep/inside"),
        OSError(28, "No space left on device", "/r/x/adapter"),
    ],
    ids=["ValueError", "JSONDecodeError", "FloatingPointError", "FileNotFoundError", "OSError"],
)
def test_any_other_error_keeps_its_traceback(monkeypatch, exc):
    _failing_step(monkeypatch, exc)
    with pytest.raises(type(exc)):
        cli.main(["show-config"])
