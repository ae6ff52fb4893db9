"""Every relative link in the README and the docs opens something: the file exists, and an
#anchor names a heading in it (GitHub's slugs)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md"]
    found += sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "deploy").rglob("*.md"))
    return [p for p in found if p.exists()]


def slugs(path: Path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())
    heads = re.findall(r"(?m)^#{1,6} +(.+?) *$", text)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def links(path: Path) -> list[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_every_relative_link_resolves():
    broken = []
    for doc in documents():
        for target in links(doc):
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in slugs(dest):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_check_reads_links_and_headings():
    readme = ROOT / "README.md"
    assert "docs/architecture.md" in links(readme)
    assert "how-a-job-runs" in slugs(ROOT / "docs" / "architecture.md")


def test_the_readme_is_short_enough_to_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text()) <= 12_000
