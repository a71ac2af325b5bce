"""The API docs pages of a real agent load nothing from another host: every script, style
sheet and icon they reference is served by the agent itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from corral.agent.docs import ASSET_FILES, assets_dir
from corral.bench.agent_process import AgentProcess

_SETTINGS = {"topology": "toy-16", "dry_run": True}
_ABSOLUTE = re.compile(r"(?:https?:)?//[\w.-]+", re.IGNORECASE)


class _Refs(HTMLParser):
    """Every ``src`` and ``href`` in a page, plus the URLs its inline script names."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs.extend(v for k, v in attrs if k in ("src", "href") and v)
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def _references(html: str) -> tuple[list[str], str]:
    parser = _Refs()
    parser.feed(html)
    return parser.refs, "\n".join(parser.scripts)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with AgentProcess(tmp_path_factory.mktemp("docs"), _SETTINGS).start(timeout_s=180) as running:
        yield running


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_files_the_agent_serves(agent: AgentProcess, page: str) -> None:
    with httpx.Client(base_url=agent.url) as http:
        answer = http.get(page)
        assert answer.status_code == 200
        html = answer.text
        refs, scripts = _references(html)
        assert refs, f"{page} references no assets"
        assert not _ABSOLUTE.search(html), f"{page} names another host: {_ABSOLUTE.findall(html)}"
        for ref in refs:
            assert ref.startswith("/"), ref
            fetched = http.get(ref)
            assert fetched.status_code == 200, (ref, fetched.status_code)
            assert fetched.content, ref
        for url in re.findall(r"""['"](/[^'"\s]*)['"]""", scripts):
            assert http.get(url).status_code == 200, url
        assert "/openapi.json" in html
        assert http.get("/openapi.json").json()["info"]["title"] == "corral agent"


def test_swagger_ui_gets_its_bundle_and_styles_with_their_media_types(
    agent: AgentProcess,
) -> None:
    with httpx.Client(base_url=agent.url) as http:
        refs, _ = _references(http.get("/docs").text)
        script = next(r for r in refs if r.endswith("swagger-ui-bundle.js"))
        style = next(r for r in refs if r.endswith("swagger-ui.css"))
        js = http.get(script)
        css = http.get(style)
    assert "javascript" in js.headers["content-type"]
    assert "SwaggerUIBundle" in js.text
    assert css.headers["content-type"].startswith("text/css")


def test_docs_assets_are_installed_files() -> None:
    root = assets_dir()
    assert isinstance(root, Path)
    for name in ASSET_FILES:
        assert (root / name).stat().st_size > 0, name
