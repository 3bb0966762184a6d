"""The generated regions of README.md and docs/*.md (arca.report.docs), and the docs as a reader meets them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from arca.report import docs

ROOT = Path(__file__).resolve().parents[1]


def test_committed_regions_equal_what_the_docs_command_writes():
    stale = docs.update_docs(ROOT, check=True)
    assert stale == [], f"run python -m arca docs: out of date in {stale}"


def test_readme_findings_and_table_are_generated_regions():
    text = (ROOT / "README.md").read_text()
    names = docs.OPEN.findall(text)
    assert "default/findings" in names and "default/performance" in names
    # the findings come before the commands
    assert text.index("arca:default/findings") < text.index("## The two commands")


def _reference(tmp_path: Path) -> Path:
    folder = tmp_path / "results" / "reference" / "x"
    folder.mkdir(parents=True)
    (folder / "t.md").write_text("# Title\n\nSome words.\n\n## Part\n\n| a |\n|---|\n| 1 |\n")
    return folder


def test_a_region_takes_the_table_without_its_title_and_with_its_sections_below_the_docs(tmp_path):
    _reference(tmp_path)
    text = "x\n<!-- BEGIN arca:x/t -->\nstale\n<!-- END arca:x/t -->\ny\n"
    out = docs.rewrite(text, tmp_path)
    body = "Some words.\n\n#### Part\n\n| a |\n|---|\n| 1 |\n"
    assert out == f"x\n<!-- BEGIN arca:x/t -->\n{body}<!-- END arca:x/t -->\ny\n"
    assert docs.rewrite(out, tmp_path) == out


def test_a_changed_reference_changes_the_region(tmp_path):
    folder = _reference(tmp_path)
    (tmp_path / "README.md").write_text("<!-- BEGIN arca:x/t -->\n<!-- END arca:x/t -->\n")
    assert docs.update_docs(tmp_path) == [tmp_path / "README.md"]
    assert docs.update_docs(tmp_path, check=True) == []
    (folder / "t.md").write_text("| a |\n|---|\n| 2 |\n")
    assert docs.update_docs(tmp_path, check=True) == [tmp_path / "README.md"]
    assert "| 2 |" not in (tmp_path / "README.md").read_text()  # check changes nothing


def test_markers_quoted_inside_a_line_are_not_regions(tmp_path):
    text = "see `<!-- BEGIN arca:NAME -->` here\n"
    assert docs.rewrite(text, tmp_path) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- BEGIN arca:x/t -->\nno end\n", "no matching"),
        ("<!-- BEGIN arca:x/none -->\n<!-- END arca:x/none -->\n", "no .*none.md"),
        ("<!-- BEGIN arca:y/t -->\n<!-- END arca:y/t -->\n", "expected <config>/<table>"),
    ],
)
def test_bad_regions_are_errors_naming_them(tmp_path, text, message):
    _reference(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        docs.rewrite(text, tmp_path, "README.md")


def test_findings_give_one_line_per_cell_with_the_references_numbers():
    lines = docs.findings(ROOT / "results" / "reference" / "smoke").splitlines()
    assert lines and all(line.startswith("- **") for line in lines)
    assert all(re.search(r"\((\+|-)?\d", line) for line in lines)


def test_readme_is_short_and_docs_read_as_documentation_not_a_log():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    log_words = re.compile(r"previous version|issue \d|issue \"|this machine|project's machine|commit `[0-9a-f]{7}")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found = log_words.search(path.read_text())
        assert found is None, f"{path.name}: {found.group(0)!r}"


def test_every_relative_link_of_the_readme_and_docs_points_to_a_file():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
            if target.startswith("http") or target.endswith("security.md"):
                continue  # security.md is written separately
            assert (path.parent / target).exists(), f"{path.name} links to {target}"
