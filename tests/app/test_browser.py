"""A real browser against ``streamlit run app.py``: every page renders without an exception.

Starts the app headless on a free localhost port with a temporary ``ATTRCORE_HOME`` that
holds small prepared runs (plus LDS ground truth and a cost measurement, so Evaluate and
Cost show results), waits for ``/_stcore/health``, opens every page in Debian's headless
Chromium through Playwright (``executable_path``; never ``playwright install``), checks
that the page's heading is there and no ``stException`` element is, and saves a full-page
screenshot of each page into a temporary folder, so running the tests never changes the
repository. Refreshing the README's screenshots is an explicit command:

    ATTRCORE_SCREENSHOTS=assets/screenshots python -m pytest -q tests/app/test_browser.py
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A deep link comes first on purpose: it is the first request the fresh server sees
# (see pages/_shared.require_router).
PAGES = [
    ("train", "train", "Train a model"),
    ("home", "", "attrcore: which training examples made this prediction?"),
    ("explore", "explore", "Explore attributions"),
    ("evaluate", "evaluate", "Evaluate attributions"),
    ("cost", "cost", "Cost on this machine"),
    ("mislabeled", "mislabeled", "Mislabeled data"),
]


# Pages whose results belong to one run (prepare_store computed them for digits-k2): the
# screenshot opens that run, so the README shows results rather than an empty state.
RESULTS = {"evaluate": ("digits-k2", "2 · LDS per method"), "cost": ("digits-k2", "break-even (queries)")}


def prepare_store(home: Path) -> None:
    """Two small digits runs (K = 2 and K = 0, same training), LDS ground truth with the
    Evaluate page's default settings, a cost measurement of the first run, and a digits run
    with 10 % flipped labels and two review marks for the Mislabeled data page."""
    from attrcore import RunStore, SimulationConfig, TrainConfig
    from attrcore import app as sup

    store = RunStore(home)
    data = sup.DataChoice("digits", test_fraction=0.5)
    train = TrainConfig(epochs=3, lr=0.1, batch_size=16)
    runs = {}
    for name, k in (("digits-k0", 0), ("digits-k2", 2)):
        runs[name] = sup.TrainRequest(
            data=data, name=name, hidden=(16,), train=train, simulation=SimulationConfig(horizon=k)
        ).fit_and_save(store)
    run = runs["digits-k2"]
    version = sup.run_version(store, "digits-k2")
    sup.lds_truth(store, run, version, sup.LDSSettings())
    sup.save_cost(store, "digits-k2", version, sup.measure_cost(run, query_counts=(1, 4, 16, 64)))
    # Mislabeled data: a run with 10 % flipped labels (newest, so the page opens on it), two marks
    from attrcore import mislabel as ml

    noisy = sup.NoisyRunRequest("digits", 0.1, None, 0, "digits-noisy", hidden=(32,), train=TrainConfig(epochs=10))
    noisy.fit_and_save(store)
    ml.set_marks(store, "digits-noisy", [ml.Mark(0, "remove"), ml.Mark(1, "relabel", 3)])
    store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot_dir(tmp_root: Path) -> Path:
    """Where screenshots go: ``$ATTRCORE_SCREENSHOTS`` when set (the README refresh), else a
    temporary folder."""
    chosen = os.environ.get("ATTRCORE_SCREENSHOTS")
    return Path(chosen).resolve() if chosen else tmp_root / "screenshots"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("shots"))


def test_screenshots_go_to_a_temporary_folder_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTRCORE_SCREENSHOTS", raising=False)
    assert ROOT not in screenshot_dir(tmp_path).parents
    monkeypatch.setenv("ATTRCORE_SCREENSHOTS", str(ROOT / "assets" / "screenshots"))
    assert screenshot_dir(tmp_path) == ROOT / "assets" / "screenshots"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The server's ``ATTRCORE_HOME``, with the prepared runs."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    home = tmp_path_factory.mktemp("browser") / "home"
    prepare_store(home)
    return home


@pytest.fixture(scope="module")
def server(home):
    port = free_port()
    log = open(home.parent / "streamlit.log", "w")  # closed in the teardown
    env = {**os.environ, "ATTRCORE_HOME": str(home)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not become healthy in 90 s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def wait_until_rendered(page) -> None:
    """The heading is there, the script has finished, and charts had time to draw."""
    page.wait_for_selector("h1", timeout=120_000)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')?.dataset?.testScriptState === 'notRunning'",
        timeout=180_000,
    )
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(2500)


@pytest.mark.parametrize(("name", "path", "heading"), PAGES, ids=[p[0] for p in PAGES])
def test_page_renders_without_exception(browser, server, shots, name, path, heading):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server}/{path}")
        for _ in range(10):  # from the very first paint: never Streamlit's folder-mode menu
            assert not page.query_selector_all('[data-testid="stSidebarNav"]'), "folder-mode menu shown"
            page.wait_for_timeout(150)
        wait_until_rendered(page)
        exceptions = page.query_selector_all('[data-testid="stException"]')
        assert not exceptions, [e.inner_text()[:500] for e in exceptions]
        assert heading in page.locator("h1").first.inner_text()
        nav = page.get_by_test_id("stTopNav").inner_text()  # app.py's own menu (st.navigation, top)
        assert "Attribute" in nav and "Judge" in nav and "shared" not in nav, f"app.py's navigation: {nav!r}"
        assert not page.query_selector_all('[data-testid="stSidebarNav"]')
        if name in RESULTS:  # pick the run that has them in the sidebar
            run, shown = RESULTS[name]
            page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
            page.get_by_role("option", name=run, exact=True).click()
            text = wait_for_text(page, shown)
            assert not page.query_selector_all('[data-testid="stException"]'), text[:800]
            wait_until_rendered(page)
        if name == "mislabeled":  # the noisy run is ranked and its marks are listed
            body = page.get_by_test_id("stMain").inner_text()
            assert "flipped on purpose" in body and "2 mark(s)" in body, body[:800]
        # Streamlit scrolls inside stMain: grow the viewport to the content for a full-page shot
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 1000")
        page.set_viewport_size({"width": 1400, "height": max(900, min(int(height) + 20, 12_000))})
        page.wait_for_timeout(2000)
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        assert not page.query_selector_all('[data-testid="stException"]')
    finally:
        page.close()


# ----------------------------------------------------------------------------- uploads


def write_table(path: Path, n: int, seed: int, columns=("a", "b", "c")) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(columns)))
    rows = [",".join((*columns, "label")), *(",".join((*map(str, x), "yes" if x[0] > 0 else "no")) for x in X)]
    path.write_text("\n".join(rows) + "\n")
    return path


def uploads_in(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "uploads").rglob("*") if p.is_file()) if (home / "uploads").exists() else []


def wait_for_script(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')?.dataset?.testScriptState === 'notRunning'",
        timeout=120_000,
    )
    page.wait_for_timeout(500)


def wait_for_text(page, text: str, selector: str = '[data-testid="stMain"]', timeout: float = 120_000) -> str:
    """Wait until an element matching ``selector`` holds ``text`` and the script is idle (an
    upload can take more than one rerun: the widget's value arrives after the file); return
    the text of those elements."""
    script = (
        "([sel, text]) => document.querySelector('[data-testid=\"stApp\"]')?.dataset?.testScriptState === "
        "'notRunning' && [...document.querySelectorAll(sel)].some(e => e.innerText.includes(text))"
    )
    try:
        page.wait_for_function(script, arg=[selector, text], timeout=timeout)
    finally:
        found = " ".join(e.inner_text() for e in page.query_selector_all(selector))
    return found


def test_train_page_uploads_a_csv_an_evaluation_file_and_rejects_malformed_ones(browser, server, home, tmp_path):
    """Real file uploads (st.file_uploader through Playwright's set_input_files): a CSV with
    its columns offered, a matching evaluation file that becomes the test split, an
    evaluation file with other columns and a malformed NPZ, each refused with a message, and
    no rejected file left in the store."""
    train = write_table(tmp_path / "mine.csv", 120, 0)
    held = write_table(tmp_path / "holdout.csv", 25, 1)
    wrong = write_table(tmp_path / "wrong.csv", 25, 2, columns=("a", "b", "zzz"))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 this is not an npz")
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    try:
        page.goto(f"{server}/train")
        wait_until_rendered(page)
        page.get_by_test_id("stSelectbox").filter(has_text="Data set").click()
        page.get_by_role("option", name="Upload a CSV or NPZ file…").click()
        wait_for_script(page)
        inputs = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        inputs.first.set_input_files(str(train))
        text = wait_for_text(page, "96 training and 24 test examples")
        assert "Label column" in text and "Your evaluation set" in text, text[:1500]

        inputs.nth(1).set_input_files(str(held))
        wait_for_text(page, "120 training and 25 test examples")
        assert not page.query_selector_all('[data-testid="stException"]')

        alerts = '[data-testid="stAlertContentError"]'
        inputs.nth(1).set_input_files(str(wrong))
        errors = wait_for_text(page, "does not have the feature columns", alerts)
        assert "zzz" in errors, errors
        assert "wrong.csv" not in uploads_in(home)  # rejected: not kept

        inputs.first.set_input_files(str(broken))
        errors = wait_for_text(page, "broken.npz", alerts)
        assert not page.query_selector_all('[data-testid="stException"]')
        assert "broken.npz" not in uploads_in(home) and "wrong.csv" not in uploads_in(home)
    finally:
        page.close()
