"""The README and docs/ hold together: links resolve, anchors exist, snippets match the example DAGs.

The README is the newcomer's entry (the two commands first, at most about 8 KB); everything else is in
docs/ by topic, and a page moved or a heading renamed must not leave a link pointing nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# [text](target) and ![alt](target); a target has no spaces (titles are not used in these docs).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SNIPPET = re.compile(r"<!-- from (dags_examples/[\w./-]+) -->\n```python\n(.*?)\n```", re.DOTALL)


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks: a `# comment` in a bash block is no heading."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[str]:
    text = "\n".join(prose_lines(page.read_text()))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return LINK.findall(text)


def test_github_slug_follows_githubs_rules():
    assert github_slug("Event-driven runs: `DeyelChangeTrigger` and `AssetWatcher`") == (
        "event-driven-runs-deyelchangetrigger-and-assetwatcher"
    )
    assert github_slug("Speed, memory, publishing, formats") == "speed-memory-publishing-formats"
    assert github_slug("The `deyel` connection") == "the-deyel-connection"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:...: not ours to check
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
            continue
        if anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, broken


def test_the_link_check_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## A `code` part\n\nSee [here](#a-code-part), [gone](#missing), [file](nope.md).\n"
    )
    assert anchors(page) == {"title", "a-code-part"}
    assert links(page) == ["#a-code-part", "#missing", "nope.md"]


def test_readme_is_short_and_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 9 * 1024, "the README is the entry: topics belong in docs/"
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make demo", "make test"]
    assert readme.index("```bash") < readme.index("\n## "), "the commands come before any section"


def test_snippets_are_copied_from_the_example_dags():
    found = 0
    for page in PAGES:
        for source, code in SNIPPET.findall(page.read_text()):
            assert code in (ROOT / source).read_text(), f"{page.name}: the snippet from {source} has drifted"
            found += 1
    assert found >= 4  # the quickstart's DAG and the extract, upsert, sensor and token examples


def test_every_docs_page_is_linked_from_the_index():
    index = (ROOT / "docs" / "index.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"]({page.name})" in index, page.name
