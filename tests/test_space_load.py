"""The Space under concurrent load (issue 26): 16 simultaneous API calls of the same image and 16 of different images
all succeed, and an API call's upload is deleted only once no other call may need it (`spaces/uploads.py`).

Gradio stores identical uploads at one path (``<cache>/<sha256>/<name>``), so the first version of the app, which
deleted each call's upload when the call was done, failed 6-14 of 16 identical concurrent calls with "did not arrive".
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from spaces.uploads import GRACE_S, UploadLeases
from test_space import EXAMPLES_DIR, example_paths, free_port, load_app, reference_outputs, space_model_dir

CALLS = 16


# ----------------------------------------------------------------------------------------------------------------
# UploadLeases on its own: who may delete an upload, and when
# ----------------------------------------------------------------------------------------------------------------


def _upload(cache, digest="abc123", name="photo.png"):
    (cache / digest).mkdir(parents=True, exist_ok=True)
    path = cache / digest / name
    path.write_bytes(b"x")
    return path


def test_an_upload_goes_only_after_its_last_holder_and_the_grace_period(tmp_path):
    cache = tmp_path / "cache"
    upload = _upload(cache)
    leases = UploadLeases(cache, grace_s=60)
    with leases.hold(str(upload)):
        with leases.hold(str(upload)):  # a second call of the same bytes: the same path
            pass
        assert leases.holders(upload) == 1
        assert leases.sweep(now=time.time() + 3600) == [] and upload.exists()  # still held by the first call
    assert leases.holders(upload) == 0
    assert leases.sweep() == [] and upload.exists()  # released, but it arrived < 60 s ago: a queued call may need it
    assert leases.sweep(now=time.time() + 61) == [upload.resolve()] and not upload.exists()
    assert upload.parent.is_dir()  # the folder stays: Gradio may be renaming a new upload into it


def test_a_newer_identical_upload_restarts_the_grace_period(tmp_path):
    cache = tmp_path / "cache"
    upload = _upload(cache)
    leases = UploadLeases(cache, grace_s=60)
    with leases.hold(upload):
        pass
    os.utime(upload, (time.time() - 120, time.time() - 120))  # arrived long ago (mtime; ctime is now)...
    assert leases.sweep() == [] and upload.exists()  # ...but its ctime says a new upload was renamed over it now
    assert leases.sweep(now=time.time() + 61) == [upload.resolve()]


def test_the_pages_uploads_and_files_outside_the_cache_are_never_deleted(tmp_path):
    cache = tmp_path / "cache"
    page_upload = _upload(cache, "def456")
    api_upload = _upload(cache, "abc123")
    example = tmp_path / "example.png"
    example.write_bytes(b"x")
    leases = UploadLeases(cache, grace_s=0)
    leases.keep(str(page_upload))  # the page re-reads it when the class changes
    for path in (page_upload, api_upload, example, str(cache / ".." / "example.png"), None):
        with leases.hold(path):
            pass
    assert leases.sweep(now=time.time() + 3600) in ([], [api_upload.resolve()])  # hold() swept already
    assert page_upload.exists() and example.exists() and not api_upload.exists()


# ----------------------------------------------------------------------------------------------------------------
# The launched app: 16 concurrent identical and 16 concurrent different calls through gradio_client
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, demo, model folder) of the app launched in this process, uploads in a temp folder."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio_tmp"))
    app = load_app()
    model_dir = space_model_dir(tmp_path_factory)
    demo = app.build_demo(model_dir)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield url, demo, model_dir
    finally:
        demo.close()
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous


def _concurrent_calls(url, paths, tmp_path):
    """Each path through its own gradio_client Client (one visitor each), all at once; the top label or the error."""
    from gradio_client import Client, handle_file

    def call(item):
        index, path = item
        try:
            client = Client(url, verbose=False, download_files=str(tmp_path / f"downloads_{index}"))
            _, explanation = client.predict(handle_file(path), api_name="/explain")
            return explanation["predicted_class"]["label"]
        except Exception as error:  # noqa: BLE001 - collected: the assertion lists every failure
            return f"FAILED: {error}"

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(call, enumerate(paths)))


def _expected_label(model_dir, path):
    logits, id2label = reference_outputs(model_dir, Image.open(path))
    return id2label[int(np.argmax(logits))]


def test_concurrent_identical_and_different_uploads_all_succeed(served, tmp_path):
    url, demo, model_dir = served
    same = os.path.join(EXAMPLES_DIR, "6_shirt.png")
    # Copies outside the examples folder: what a visitor uploads (same bytes, so Gradio stores them at one path).
    copies = []
    for i in range(CALLS):
        copy = tmp_path / f"visitor_{i}" / "shirt.png"
        copy.parent.mkdir()
        copy.write_bytes(open(same, "rb").read())
        copies.append(str(copy))
    results = _concurrent_calls(url, copies, tmp_path)
    assert results == [_expected_label(model_dir, same)] * CALLS, results

    # 16 different images: the 10 examples and 6 of them with one pixel changed (different bytes, different paths).
    different = list(example_paths())
    for i, path in enumerate(different[: CALLS - len(different)]):
        image = Image.open(path).convert("L")
        image.putpixel((0, 0), (image.getpixel((0, 0)) + 1) % 256)
        changed = tmp_path / f"changed_{i}.png"
        image.save(changed)
        different.append(str(changed))
    results = _concurrent_calls(url, different, tmp_path)
    assert results == [_expected_label(model_dir, p) for p in different], results

    # Nobody holds an upload now; once the grace period is over every API upload is deleted, except the examples'
    # copies that Gradio keeps in its cache (the shirt's bytes are an example's: same path, and it must stay).
    def cached_pngs():
        return {os.path.realpath(os.path.join(d, f)) for d, _, files in os.walk(demo.GRADIO_CACHE) for f in files}

    kept = {os.path.realpath(p) for b in demo.blocks.values() for p in getattr(b, "keep_in_cache", ())}
    assert len(kept) == len(example_paths())
    assert cached_pngs() - kept, "the calls' uploads were expected in Gradio's cache until the grace period is over"
    demo.upload_leases.sweep(now=time.time() + GRACE_S + 1)
    assert cached_pngs() == kept
