"""The documentation holds together: every relative link and image in README.md and docs/ points at a
file that exists, every ``#anchor`` into a Markdown page names one of its headings (GitHub's rule),
and README.md stays a short front door."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List, Set, Tuple
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_LIMIT = 12 * 1024

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the text may hold one level of brackets (an image inside a link)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)"
                         r"(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def markdown_files() -> List[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)


def links(path: Path) -> List[Tuple[int, str]]:
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        targets = [m.group(1) for m in INLINE_LINK.finditer(line)]
        ref = REFERENCE_DEF.match(line)
        if ref:
            targets.append(ref.group(1))
        found += [(number, t[1:-1] if t.startswith("<") else t) for t in targets]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text without markup, lowercased, punctuation dropped (all
    but hyphens, underscores and spaces), spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    """Every anchor GitHub makes for the headings of ``path`` (a repeated heading gets -1, -2, ...)."""
    seen: dict = {}
    result = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
    return result


def problems(path: Path) -> List[str]:
    """What is wrong with the relative links of one Markdown file, in words."""
    out = []
    for number, target in links(path):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if not dest.exists():
            out.append(f"{where}: no such file")
            continue
        if anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            out.append(f"{where}: no heading with this anchor in {dest.relative_to(ROOT)}")
    return out


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert problems(path) == []


def test_readme_is_a_front_door() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail to docs/ (limit {README_LIMIT})"


def test_docs_pages_exist() -> None:
    assert len(markdown_files()) > 1, "docs/ has no Markdown pages"


@pytest.mark.parametrize("heading, anchor", [
    ("Privacy: where your data rests", "privacy-where-your-data-rests"),
    ("Mirror averaging (`flip`)", "mirror-averaging-flip"),
    ("`depthmap predict`", "depthmap-predict"),
    ("Engine, and why there is no timm", "engine-and-why-there-is-no-timm"),
    ("Sizes for a 12 MP photo", "sizes-for-a-12-mp-photo"),
    ("Flicker, memory, speed", "flicker-memory-speed"),
    ("POST /api/v1/depth", "post-apiv1depth"),
])
def test_slug_follows_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_link_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # problems() names files relative to ROOT
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n", encoding="utf-8")
    page.write_text("# Page\n\n[ok](other.md#a-section) [ok](#page) [bad](missing.md) "
                    "[bad anchor](other.md#nope) [bad here](#nope) [web](https://example.com/x)\n\n"
                    "```\n[in code](ignored.md)\n```\n", encoding="utf-8")
    found = problems(page)
    assert len(found) == 3, found
    assert "missing.md: no such file" in found[0]
    assert all("no heading" in f for f in found[1:])
