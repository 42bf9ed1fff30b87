"""docs/ stays current with the code: every operation of the three services and every problem code (with
its status) is in docs/api.md, and the READMEs and docs link only to files and headings that exist, in
the repository (the contract is no longer outside it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from services.openapi import PROBLEMS
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "docs" / "api.md"
PAGES = sorted([ROOT / "README.md", *ROOT.glob("*_service/README.md"), *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", page.read_text(), re.M)}


@pytest.mark.parametrize("service", ["ledger", "conversion", "catalog"])
def test_every_operation_is_in_api_md(service: str, test_settings: Settings) -> None:
    module: Any = __import__(f"{service}_service.app", fromlist=["create_app"])
    spec = module.create_app(test_settings).openapi()
    text = API.read_text()
    missing = [
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if f"`{method.upper()} {path}`" not in text
    ]
    assert not missing, f"docs/api.md lacks {missing}"


def test_every_problem_code_is_in_api_md_with_its_status() -> None:
    rows = re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", API.read_text(), re.M)
    table = {code: int(status) for status, code in rows}
    assert len(table) > 50  # the table is there
    wrong = {code: status for code, (status, _) in PROBLEMS.items() if table.get(code) != status}
    assert not wrong, f"docs/api.md's error table disagrees with services.openapi.PROBLEMS: {wrong}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(page: Path) -> None:
    text = page.read_text()
    assert "shared/DESIGN" not in text, "the contract is docs/api.md now"
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        assert ROOT in linked.parents or linked == ROOT, f"{page.name} links outside the repository: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), (
                f"{page.name} links to #{anchor}, no such heading in {linked.name}"
            )
