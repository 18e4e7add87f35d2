"""Cards rendered to HTML without a run, and opened in headless Chromium: page width and visible text."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import pytest
from metaflow.plugins.cards.card_modules.basic import BlankCard

WINDOW = (1400, 900)
"""The browser window the cards must fit: a laptop's browser, not a wide monitor."""

_MEASURE = """<script>
// After the card's own script has drawn it: how wide the page is, written where --dump-dom sees it.
window.addEventListener("load", () => setTimeout(() => {
  const out = document.createElement("div");
  out.id = "measured";
  out.dataset.scrollWidth = document.documentElement.scrollWidth;
  out.dataset.clientWidth = document.documentElement.clientWidth;
  document.body.appendChild(out);
}, 500));
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def required_chromium() -> str:
    """Chromium's path; without one, a skip on a developer's machine and a failure in CI (`CI=true`, as .ci/run
    sets it), where a browser test that skips would let every card go unseen while the run stays green."""
    found = chromium()
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("no chromium on PATH in CI: .ci/run installs Debian's chromium; the card tests must run")
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    return found


def card_html(components: list) -> str:
    """The HTML Metaflow writes for a card holding `components` (its blank card type: components only)."""
    rendered = [c.render() for c in components]
    return BlankCard(components=rendered).render(SimpleNamespace(pathspec="TuneFlow/1/step/1"))


@dataclass
class Rendered:
    scroll_width: int
    client_width: int
    text: str
    """The page's visible text once its script has run (tags removed)."""
    figures: list[str]
    """The titles of the Vega charts the page drew with marks (bars, lines, points) in them."""


def _drawn_figures(dom: str) -> list[str]:
    """Titles of the charts vega-embed drew: each is an SVG in a `vega-embed` element, its data marks paths in
    groups of role `mark`; a chart with no data draws its axes and title around empty groups."""
    titles = []
    for chart in dom.split('<div class="vega-embed"')[1:]:
        svg = chart[: chart.find("</svg>")]
        title = re.search(r"aria-label=\"Title text '(.*?)'\"", svg)
        drawn = re.search(r'class="mark-\w+ role-mark[^"]*"[^>]*><path[^>]* d="M', svg)  # a mark group with a mark
        if title and drawn:
            titles.append(unescape(title[1]))
    return titles


def _browser(binary: str, profile: Path, *args: str, height: int = WINDOW[1]) -> subprocess.CompletedProcess:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{height}",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def open_in_chromium(binary: str, html: str, screenshot: Path | None = None) -> Rendered:
    """Load the card in a fresh headless Chromium profile; measure it, and screenshot it if asked."""
    with tempfile.TemporaryDirectory(prefix="tune-chromium-") as work:
        page = Path(work) / "card.html"
        head, _, tail = html.rpartition("</body>")  # the last one: the card's script holds the string too
        page.write_text(head + _MEASURE + "</body>" + tail)
        dom = _browser(binary, Path(work) / "profile", "--dump-dom", page.as_uri()).stdout
        if screenshot:
            # As wide as the window, tall enough for the whole card: what a reader scrolls through.
            _browser(binary, Path(work) / "shot", f"--screenshot={screenshot}", page.as_uri(), height=4000)
    measured = re.search(r'id="measured" data-scroll-width="(\d+)" data-client-width="(\d+)"', dom)
    if not measured:
        raise AssertionError(f"the card's page did not finish drawing in Chromium; DOM starts {dom[:300]!r}")
    body = dom[dom.rfind("<main") : dom.rfind("</main>")]  # the card's content, not the page's scripts
    body = re.sub(r"<svg.*?</svg>|<style.*?</style>", " ", body, flags=re.S)
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())
    return Rendered(int(measured[1]), int(measured[2]), text, _drawn_figures(dom))
