"""Write spaces/screenshot.png: the explanation view of one example, as Debian chromium renders it.

    python spaces/make_screenshot.py [--example spaces/examples/9_ankle_boot.png] [--out spaces/screenshot.png]

Starts `python spaces/app.py` (the bundled model unless INFODISENT_MODEL is set) on a free port in a subprocess,
uploads the example with playwright + /usr/bin/chromium (no browser download), waits for the explanation, and saves
the region from the input image down to the first prototype cards. Prints the time from upload to explanation.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", default=os.path.join(HERE, "examples", "9_ankle_boot.png"))
    parser.add_argument("--out", default=os.path.join(HERE, "screenshot.png"))
    parser.add_argument("--cards", type=int, default=3, help="prototype cards to include below the overview")
    args = parser.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=tmp, HF_HUB_OFFLINE="1")
        server = subprocess.Popen([sys.executable, os.path.join(HERE, "app.py")], env=env)
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(360):
                try:
                    urllib.request.urlopen(url, timeout=5)
                    break
                except OSError:
                    time.sleep(0.5)
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
                page.set_default_timeout(120_000)
                page.goto(url)
                page.locator("#input-image input[type=file]").wait_for(state="attached")
                started = time.perf_counter()
                page.locator("#input-image input[type=file]").set_input_files(args.example)
                page.locator("#status-box").get_by_text("Explaining").wait_for()
                print(f"upload -> explanation: {time.perf_counter() - started:.2f} s")
                page.locator(".proto-gallery img").first.wait_for()
                page.wait_for_timeout(1500)  # images finish loading, toasts and spinners settle
                top = page.locator("#input-image").bounding_box()["y"] - 12
                rows = page.locator(".proto-row")
                bottom = rows.nth(min(args.cards, rows.count()) - 1).bounding_box()
                height = bottom["y"] + bottom["height"] + 12 - top
                page.screenshot(path=args.out, clip={"x": 0, "y": top, "width": 1280, "height": height}, full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
