"""The docs site's generated reference pages match the code, and the README stays a front door."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_reference_pages_are_up_to_date():
    run = subprocess.run(
        [sys.executable, "scripts/gen_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr


def test_the_readme_is_a_front_door_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to a missing file: {target}"


def test_nothing_cites_a_document_outside_the_repository():
    offenders = []
    for path in ROOT.glob("**/*"):
        if path.suffix not in {".py", ".md", ".yml", ".yaml"} or any(
            p in path.parts for p in (".venv", ".flywheel", ".git", "node_modules")
        ):
            continue
        if path != Path(__file__) and "shared/DESIGN" + ".md" in path.read_text(errors="replace"):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], offenders
