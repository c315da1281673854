"""The Space's example click under concurrent load, in Debian chromium (issue 26): several visitors click the same
example at once while API clients upload the same bytes, then every visitor clicks a different example; every page
shows its explanation and every API call succeeds.

An example's file lies in Gradio's cache at the path an upload of the same bytes gets, so an app that deleted an API
call's upload when the call was done deleted the example for everyone (see tests/test_space_load.py).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from test_space import EXAMPLES_DIR, example_paths, reference_outputs, space_model_dir
from test_space_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser, serve_space

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = 8  # visitors with a page open at once (each its own browser context: its own Gradio session)
API_CALLS = 8  # API clients uploading the clicked example's bytes meanwhile
WAIT_MS = 180_000  # 16 explanations queued two at a time on 2 shared CI cores


def _top_label(model_dir, path):
    logits, id2label = reference_outputs(model_dir, Image.open(path))
    return id2label[int(np.argmax(logits))]


def _click_example(page, name):
    page.locator(".gallery-item", has=page.locator(f"img[src*='{name}']")).click()


def test_many_pages_click_the_same_example_at_once(tmp_path_factory, tmp_path):
    _require_browser()
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect, sync_playwright

    model_dir = space_model_dir(tmp_path_factory)
    shirt = os.path.join(EXAMPLES_DIR, "6_shirt.png")
    examples = example_paths()
    with serve_space(model_dir, tmp_path_factory) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        for _ in range(PAGES):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.goto(url)
            page.locator(".gallery-item").first.wait_for()
            pages.append(page)

        def api_call(index):
            copy = tmp_path / f"client_{index}" / "6_shirt.png"
            copy.parent.mkdir()
            copy.write_bytes(open(shirt, "rb").read())
            try:
                client = Client(url, verbose=False, download_files=str(tmp_path / f"downloads_{index}"))
                return client.predict(handle_file(str(copy)), api_name="/explain")[1]["predicted_class"]["label"]
            except Exception as error:  # noqa: BLE001 - collected: the assertion lists every failure
                return f"FAILED: {error}"

        # Every page clicks the shirt (each click only queues an event: the server serves them concurrently) while
        # API clients upload the same bytes; then every page waits for its own explanation.
        expected = _top_label(model_dir, shirt)
        with ThreadPoolExecutor(API_CALLS) as pool:
            calls = [pool.submit(api_call, i) for i in range(API_CALLS)]
            for page in pages:
                _click_example(page, "6_shirt.png")
            for page in pages:
                expect(page.locator("#status-box")).to_contain_text(f"Explaining {expected}", timeout=WAIT_MS)
                expect(page.locator(".proto-heatmap img").first).to_be_visible(timeout=WAIT_MS)
            results = [call.result() for call in calls]
        assert results == [expected] * API_CALLS, results

        # Then each page clicks a different example, all at once.
        chosen = [examples[i % len(examples)] for i in range(PAGES)]
        for page, path in zip(pages, chosen):
            _click_example(page, os.path.basename(path))
        for page, path in zip(pages, chosen):
            status = page.locator("#status-box")
            expect(status).to_contain_text(f"Explaining {_top_label(model_dir, path)}", timeout=WAIT_MS)
            expect(status).not_to_contain_text("Cannot explain")
        browser.close()
