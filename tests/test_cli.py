"""The command line as a user meets it: help text without markup, a version, clean errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

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


# ----------------------------------------------------------------------------- errors
def _failing_step(monkeypatch, exc: BaseException) -> None:
    def step(cfg, args):
        raise exc

    monkeypatch.setattr(cli, "show_config", step)


def test_an_os_error_is_one_line_naming_the_path_and_errno(monkeypatch, capsys):
    import errno

    _failing_step(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/r/x/adapter"))
    assert cli.main(["show-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/r/x/adapter" in err and "errno 28" in err and "ENOSPC" in err


def test_the_projects_own_error_is_one_line_and_exit_2(monkeypatch, capsys):
    from arca.config import InputError

    _failing_step(monkeypatch, InputError("data.jsonl:3: malformed JSON line\n  (column 4)"))
    assert cli.main(["show-config"]) == 2
    assert capsys.readouterr().err == "error: data.jsonl:3: malformed JSON line (column 4)\n"


@pytest.mark.parametrize(
    "exc",
    [ValueError("a bug"), json.JSONDecodeError("a bug", "{", 0), FloatingPointError("a bug")],
    ids=["ValueError", "JSONDecodeError", "FloatingPointError"],
)
def test_any_other_error_keeps_its_traceback(monkeypatch, exc):
    _failing_step(monkeypatch, exc)
    with pytest.raises(type(exc)):
        cli.main(["show-config"])
