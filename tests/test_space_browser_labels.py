"""Class names are data, never markup, in a real browser (issue 13, fault 5).

A model whose ten class names are HTML, Markdown, math and script payloads, each pointing at a local "trap" HTTP
server, is served with `python spaces/app.py` and explained in chromium: no element is created from a name, no
math is typeset, the trap receives no request, and every name is shown literally. Runs with the other browser tests
(skipped without chromium / playwright outside CI; CI=true must run it).
"""

import http.server
import os
import threading

import numpy as np
import pytest
from PIL import Image

from test_space import EXAMPLES_DIR, build_tiny_space_model, free_port, reference_outputs
from test_space_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser, _upload, _wait_for_explanation, serve_space

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def hostile_labels(trap: str) -> list[str]:
    return [
        f"<img src={trap}/img0>",
        f"![pic]({trap}/md1) [link]({trap}/link1)",
        "<script>document.title='owned2'</script>",
        "Shirt $\\undefinedcmd$ $$x^2$$",
        f"**bold4** _it_ `code` <b>b</b> <iframe src={trap}/frame4></iframe>",
        f"<svg onload=\"fetch('{trap}/svg5')\"></svg>",
        "\u202eRTL שלום 6",
        "x" * 120 + "7",
        "| a | b | 8 |",
        f"&lt;img src={trap}/entity9&gt;",
    ]


class _Trap(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server API
        _Trap.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def trap():
    server = http.server.HTTPServer(("127.0.0.1", free_port()), _Trap)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def hostile_server(trap, tmp_path_factory):
    _require_browser()
    labels = hostile_labels(trap)
    model_dir = build_tiny_space_model(str(tmp_path_factory.mktemp("hostile_model")), labels)
    with serve_space(model_dir, tmp_path_factory) as url:
        yield url, model_dir, labels


def _no_markup_from_labels(page, trap: str) -> None:
    assert page.locator(f"img[src^='{trap}'], iframe[src^='{trap}'], a[href^='{trap}']").count() == 0
    assert page.locator("svg[onload]").count() == 0
    assert page.locator(".katex, math").count() == 0
    assert page.evaluate("() => document.title") != "owned2"


def test_hostile_class_names_are_shown_literally(hostile_server, trap, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, model_dir, labels = hostile_server
    path = os.path.join(EXAMPLES_DIR, "9_ankle_boot.png")
    logits, _ = reference_outputs(model_dir, Image.open(path))
    order = np.argsort(-logits)
    top = labels[int(order[0])]
    _Trap.hits.clear()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.locator("#input-image input[type=file]").wait_for(state="attached")
        _upload(page, path)
        _wait_for_explanation(page, top)
        expect(page.locator("#equation")).to_contain_text(f"logit({top})")
        expect(page.locator("#probabilities")).to_contain_text(top)
        expect(page.locator(".proto-heatmap img").first).to_be_visible()
        _no_markup_from_labels(page, trap)

        # Every class through the dropdown: status, equation and chart name it literally.
        for label in labels:
            page.locator("#class-choice input").click()
            page.get_by_role("option", name=label, exact=True).click()
            _wait_for_explanation(page, label)
            expect(page.locator("#equation")).to_contain_text(f"logit({label})")
            expect(page.locator("#contributions")).to_contain_text(f"“{label}”")
            if label != top:
                expect(page.locator("#status-box")).to_contain_text(f"not the predicted class ({top})")
            _no_markup_from_labels(page, trap)

        # The global tab: class tables and prototype texts list the names as text.
        page.get_by_role("tab", name="Global: classes and prototypes").click()
        expect(page.locator("#class-table")).to_contain_text(f"“{labels[0]}” uses")
        expect(page.locator("#class-sheet img")).to_be_visible()
        for k in (1, 4, 5):
            page.locator("#global-class input").click()
            page.get_by_role("option", name=labels[k], exact=True).click()
            expect(page.locator("#class-table")).to_contain_text(f"“{labels[k]}” uses")
            _no_markup_from_labels(page, trap)
        page.screenshot(path=str(tmp_path / "hostile.png"), full_page=True)
        browser.close()
    assert _Trap.hits == [], f"the page fetched URLs from class names: {_Trap.hits}"
