"""The attention browser notebook served by Voilà and driven in Debian's Chromium through Playwright.

A tiny checkpoint is trained on a small generated shapes set; the repository's notebook gets its
parameters injected and is served on 127.0.0.1. The test changes the image, the class and the head
and checks that the class map's PNG changes each time and that no error reaches the page.
Set KYAM_BROWSER_SCREENSHOT=<path> to also keep the final screenshot there (the figure in
results/figures/ is made this way).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kyam_lib.io import atomic_write

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "08_attention_browser.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# A short content hash of an <img>'s current picture (its src is a fresh blob: URL on every update).
IMAGE_HASH_JS = """async (img) => {
    if (!img.src) return null;
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let h = 2166136261;
    for (const x of bytes) { h ^= x; h = Math.imul(h, 16777619) >>> 0; }
    const png = bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
    return `${png ? "png" : "other"}:${bytes.length}:${h}`;
}"""
ERROR_TEXTS = ("Traceback", "Error displaying widget", "Error rendering", "There was an error when executing cell")


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} not found; install it with `apt-get install -y chromium` (`make system-deps`)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " — CI must provide it")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A smoke-preset checkpoint trained on 64 + 16 generated shapes images."""
    _require_chromium()
    from kyam_lib.data.synthetic import generate_shapes

    root = tmp_path_factory.mktemp("browser")
    generate_shapes(root / "data" / "shapes", num_train=64, num_val=16)
    env = dict(os.environ, OMP_NUM_THREADS="1", KYAM_DATA_ROOT=str(root / "data"))
    result = subprocess.run([sys.executable, "-m", "kyam_lib.train", "--preset", "smoke", "--out", str(root / "run"),
                             "--data_root", str(root / "data")], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "run" / "model" / "model.safetensors").is_file()
    return root


@pytest.fixture(scope="module")
def voila_url(trained_run, request):
    """Serve the parameterised notebook with Voilà on 127.0.0.1; always stopped afterwards."""
    import nbformat
    import papermill
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    parameters = {"run_dir": str(trained_run / "run"), "runs_dir": str(trained_run), "split": "val",
                  "data_root": "", "smoke": False}
    assert set(parameters) <= set(papermill.inspect_notebook(str(NOTEBOOK))), "notebook parameters changed"
    notebook = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), parameters)
    served = trained_run / "served" / NOTEBOOK.name
    served.parent.mkdir(exist_ok=True)
    nbformat.write(notebook, served)

    voila = Path(sys.executable).with_name("voila")
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", KYAM_DATA_ROOT=str(trained_run / "data"))
    log_path = trained_run / "voila.log"
    log = open(log_path, "w")
    process = subprocess.Popen([str(voila), str(served), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
                                "--show_tracebacks=True"], cwd=served.parent, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Voilà shuts its kernels down on SIGTERM
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()

    request.addfinalizer(stop)
    deadline = time.monotonic() + 60
    while True:  # wait for the port only: a page request would start a kernel
        if process.poll() is not None:
            pytest.fail(f"voila exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"voila did not listen on port {port} within 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
    return f"http://127.0.0.1:{port}/", log_path


def _map_hash(page) -> str:
    return page.eval_on_selector("img.kyam-map", IMAGE_HASH_JS)


def _wait_for_new_map(page, old: str, what: str, timeout: float = 30.0) -> tuple[str, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        current = _map_hash(page)
        if current and current != old:
            return current, time.monotonic() - started
        page.wait_for_timeout(50)
    raise AssertionError(f"the class map did not change within {timeout:.0f} s after {what}")


def _assert_no_errors(page, page_errors: list[str], where: str) -> None:
    text = page.inner_text("body")
    for bad in ERROR_TEXTS:
        assert bad not in text, f"{where}: page shows {bad!r}:\n{text[-3000:]}"
    assert page.locator(".kyam-error").count() == 0, f"{where}: {page.inner_text('.kyam-status')}"
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert not page_errors, f"{where}: JavaScript errors {page_errors}"


def test_browser_in_chromium(voila_url, tmp_path):
    from playwright.sync_api import sync_playwright

    url, log_path = voila_url
    page_errors: list[str] = []
    latencies: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1050})
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            # Nothing outside the server is fetched (no internet here; CDN fallbacks would only time out).
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                       else route.abort())
            page.goto(url, timeout=120_000)
            try:
                page.wait_for_selector("img.kyam-map[src^='blob:']", timeout=120_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
                raise AssertionError(f"no class map appeared:\n{page.inner_text('body')[-3000:]}\n"
                                     f"voila log:\n{log_path.read_text()[-3000:]}") from None
            first = _map_hash(page)
            assert first.startswith("png:"), first
            _assert_no_errors(page, page_errors, "first view")
            page.screenshot(path=str(tmp_path / "0_first.png"), full_page=True)
            first_id = page.input_value(".kyam-id input")

            # The image: one step of the slider from the keyboard.
            page.focus(".kyam-index .noUi-handle")
            page.keyboard.press("ArrowRight")
            after_image, latencies["image"] = _wait_for_new_map(page, first, "changing the image")
            page.wait_for_function("(old) => document.querySelector('.kyam-id input').value !== old", arg=first_id)
            assert page.input_value(".kyam-id input") != first_id
            _assert_no_errors(page, page_errors, "after changing the image")
            page.screenshot(path=str(tmp_path / "1_image.png"), full_page=True)

            # The class: another entry of the class list.
            select = page.locator(".kyam-class select")
            current = select.evaluate("s => s.selectedIndex")
            select.select_option(index=(current + 1) % select.locator("option").count())
            after_class, latencies["class"] = _wait_for_new_map(page, after_image, "changing the class")
            _assert_no_errors(page, page_errors, "after changing the class")
            page.screenshot(path=str(tmp_path / "2_class.png"), full_page=True)

            # The head: a click on the gate map shows that head's own map.
            assert page.locator(".kyam-gate").count() == 16  # smoke model: 4 blocks x 4 heads
            assert page.locator(".kyam-gate-closed").count() + page.locator(".kyam-gate-open").count() == 16
            page.click(".kyam-gate-b3-h1")
            _, latencies["head"] = _wait_for_new_map(page, after_class, "clicking head 1 of block 3")
            page.wait_for_selector(".kyam-gate-b3-h1.kyam-gate-chosen")
            assert page.locator(".kyam-gate-chosen").count() == 1
            assert "one head" in page.inner_text(".kyam-weighting .mod-active, .kyam-weighting button.mod-active")
            _assert_no_errors(page, page_errors, "after choosing a head")
            final = tmp_path / "3_head.png"
            page.screenshot(path=str(final), full_page=True)
        finally:
            browser.close()
    print(f"map update latency in the browser (s): {latencies}")
    keep = os.environ.get("KYAM_BROWSER_SCREENSHOT")
    if keep:
        with atomic_write(keep) as tmp:
            shutil.copyfile(final, tmp)
