"""The design notes live in the repository, and what cites them points at a section that exists."""

from __future__ import annotations

import re
import subprocess

from helpers import REPO

DESIGN = REPO / "docs" / "design.md"
CITE = re.compile(r"docs/design\.md §(\d+)")
PENDING: set[str] = set()  # files allowed to cite the old, out-of-repo facts sheet: none


def tracked_text_files() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    out = {}
    for name in names:
        path = REPO / name
        if path.is_file() and path.suffix in {".py", ".md", ".yaml", ".toml", ".txt", ""}:
            out[name] = path.read_text(encoding="utf-8", errors="replace")
    return out


def sections() -> set[int]:
    return {int(n) for n in re.findall(r"^## (\d+)\. ", DESIGN.read_text(encoding="utf-8"), re.M)}


def test_design_notes_have_the_six_numbered_sections():
    assert sections() >= {1, 2, 3, 4, 5, 6}


def test_citations_point_at_existing_sections():
    have = sections()
    bad = [f"{name}: §{n}" for name, text in tracked_text_files().items() for n in map(int, CITE.findall(text))
           if n not in have]
    assert not bad, f"cite sections docs/design.md does not have: {bad}"


def test_nothing_points_outside_the_repository():
    outside = re.compile(r"\bSPEC\b|/work/shared")
    bad = [name for name, text in tracked_text_files().items()
           if outside.search(text) and name not in PENDING and not name.startswith("docs/")
           and name != "tests/test_docs.py"]
    assert not bad, f"files that refer to a facts file outside the repository: {bad}"
