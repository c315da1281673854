"""The Space in a real browser: Debian chromium driven by Python playwright (no browser download).

The app is started with the README's command (`python spaces/app.py`, port from GRADIO_SERVER_PORT) in a
subprocess. Skipped with a reason only when chromium or playwright is missing outside CI; with CI=true it must run.
"""

import contextlib
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from test_space import EXAMPLES_DIR, REPO_ROOT, free_port, reference_outputs, space_model_dir

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI") == "true"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_browser():
    missing = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Debian chromium ({CHROMIUM}; apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright (pip install playwright; no browser download needed)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if IN_CI:
            pytest.fail(reason + " — in CI (CI=true) this test must run.")
        pytest.skip(reason)


@contextlib.contextmanager
def serve_space(model_dir: str, tmp_path_factory):
    """`python spaces/app.py` serving `model_dir` on a free port (GRADIO_SERVER_PORT); yields its URL once it answers,
    stops it afterwards (shared by the browser test modules)."""
    port = free_port()
    env = dict(
        os.environ,
        GRADIO_SERVER_PORT=str(port),
        INFODISENT_MODEL=model_dir,
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio_tmp")),
    )
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+")
    process = subprocess.Popen(
        [sys.executable, os.path.join("spaces", "app.py")], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"`python spaces/app.py` did not serve {url}:\n{log.read()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python spaces/app.py` on a free port; yields (url, model folder)."""
    _require_browser()
    model_dir = space_model_dir(tmp_path_factory)
    with serve_space(model_dir, tmp_path_factory) as url:
        yield url, model_dir


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(server[0])
        yield page
        browser.close()


def _upload(page, path):
    page.locator("#input-image input[type=file]").set_input_files(path)


def _wait_for_explanation(page, label):
    """Wait until the page shows the explanation of `label` (the status line is written last)."""
    status = page.locator("#status-box")
    status.get_by_text(f"Explaining {label}").wait_for()
    return status


def test_upload_explain_and_bad_upload_in_chromium(server, page, tmp_path):
    from playwright.sync_api import expect

    _, model_dir = server
    path = os.path.join(EXAMPLES_DIR, "9_ankle_boot.png")
    logits, id2label = reference_outputs(model_dir, Image.open(path))
    top = id2label[int(np.argmax(logits))]

    page.locator("#input-image input[type=file]").wait_for(state="attached")
    started = time.perf_counter()
    _upload(page, path)  # an upload explains the image right away
    _wait_for_explanation(page, top)
    print(f"\nupload -> explanation in chromium: {time.perf_counter() - started:.2f} s")

    # The top class, the exact decomposition line, a prototype heatmap and a gallery patch are on screen.
    expect(page.locator("#probabilities")).to_contain_text(top)
    expect(page.locator("#probabilities [data-testid=label-output-value]")).to_have_text(top)
    expect(page.locator("#equation")).to_contain_text(f"logit({top})")
    heatmap = page.locator(".proto-heatmap img").first
    expect(heatmap).to_be_visible()
    gallery_image = page.locator(".proto-gallery img").first
    expect(gallery_image).to_be_visible()
    for image in (heatmap, gallery_image):  # loaded, not a broken-image icon
        assert image.evaluate("img => img.complete && img.naturalWidth > 0")
    expect(page.locator("#contributions")).to_contain_text("= logit")
    page.screenshot(path=str(tmp_path / "explanation.png"), full_page=True)
    assert (tmp_path / "explanation.png").stat().st_size > 10_000

    # "Why not B?": explain another class of the same image.
    other = id2label[int(np.argmin(logits))]
    page.locator("#class-choice input").click()
    page.get_by_role("option", name=other, exact=True).click()
    _wait_for_explanation(page, other)
    expect(page.locator("#status-box")).to_contain_text("why not?")
    expect(page.locator("#equation")).to_contain_text(f"logit({other})")

    # A file that is not an image, even with an image name, reaches the app and gets a readable message.
    fake = tmp_path / "holiday.png"
    fake.write_bytes(b"%PDF-1.4 this is a document, not a picture")
    _upload(page, str(fake))
    expect(page.locator("#status-box")).to_contain_text("“holiday.png” is not an image this app can read")
    expect(page.locator(".proto-heatmap img")).to_have_count(0)  # the old explanation is gone
    # A .txt is refused by the upload widget itself, with Gradio's message.
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _upload(page, str(text))
    expect(page.get_by_text("Invalid file type").first).to_be_visible()
    page.screenshot(path=str(tmp_path / "bad_upload.png"), full_page=True)

    # The page keeps working: a valid image is explained again (an example click this time).
    page.locator("#class-choice input").click()
    page.get_by_role("option", name="Predicted class", exact=True).click()
    coat = os.path.join(EXAMPLES_DIR, "4_coat.png")
    coat_logits, _ = reference_outputs(model_dir, Image.open(coat))
    _upload(page, coat)
    page.locator("#explain-button").click()
    _wait_for_explanation(page, id2label[int(np.argmax(coat_logits))])
    expect(page.locator(".proto-heatmap img").first).to_be_visible()


def test_global_tab_in_chromium(server, page):
    from playwright.sync_api import expect

    from modeling_infodisent.loading import load_model_and_gallery

    _, model_dir = server
    model, _, gallery = load_model_and_gallery(model_dir)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    weight = model.classifier_weight.detach()

    page.get_by_role("tab", name="Global: classes and prototypes").click()
    expect(page.locator("#class-table")).to_contain_text(f"“{id2label[0]}” uses")
    sheet = page.locator("#class-sheet img")
    expect(sheet).to_be_visible()
    assert sheet.evaluate("img => img.complete && img.naturalWidth > 0")

    # Another class: its own table (number of channels it uses, counted here from W).
    page.locator("#global-class input").click()
    page.get_by_role("option", name=id2label[3], exact=True).click()
    used = int((weight[3] > 0).sum())
    expect(page.locator("#class-table")).to_contain_text(f"“{id2label[3]}” uses {used} of {weight.shape[1]} channels")

    # A prototype with a gallery: the classes that use it and exactly its gallery's patches.
    channel = next(c for c in range(weight.shape[1]) if (weight[:, c] > 0).any() and not gallery.is_dead(c, 1))
    page.locator("#global-prototype input").click()
    page.locator("#global-prototype input").fill(f"{channel}+")
    page.get_by_role("option", name=f"{channel}+", exact=True).click()
    users = int((weight[:, channel] > 0).sum())
    expect(page.locator("#prototype-text")).to_contain_text(f"Prototype {channel}+")
    expect(page.locator("#prototype-text")).to_contain_text(f"the {users} classes below")
    images = page.locator("#prototype-gallery img")
    expect(images).to_have_count(len(gallery.entries(channel, 1)))
    expect(images.first).to_be_visible()
