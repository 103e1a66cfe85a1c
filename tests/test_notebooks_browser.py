"""The smoke-set notebooks run in a real JupyterLab (headless Chromium driven by Selenium): no error
output, every chart drawn by JupyterLab's own (offline) Vega-Lite renderer, progress bars as widgets,
and afterwards the pipeline still finds every notebook up to date (running interactively rewrites
byte-identical results and figures).

Skipped, with a message, where Chromium, its driver or Selenium is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    selenium = None
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None or selenium is None,
                                reason="Chromium, chromedriver or selenium is missing: notebooks are not run in a "
                                       "browser here (apt install chromium chromium-driver; pip install selenium)")
TOKEN = "scangen-browser-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(smoke_run: dict, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the smoke run's root, the smoke notebooks parameterised into `lab/`, and a
    JupyterLab server on it (kernels get `SCANGEN_ROOT` = the copy)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from scangen.pipeline.layout import Layout

    src = smoke_run["layout"]
    root = tmp_path_factory.mktemp("browser") / "root"
    for folder in ("build", "results", "data"):
        if (src.root / folder).is_dir():
            shutil.copytree(src.root / folder, root / folder)
    layout = Layout.under(root, sources_from=src)
    pset = smoke_run["pset"]
    lab_dir = root / "lab"
    lab_dir.mkdir()
    for name in pset.names():
        nb = load_notebook_node(str(pset.notebook(name).path))  # with the metadata papermill expects
        nb = parameterize_notebook(nb, pset.parameters_for(name, layout))
        nbformat.write(nb, lab_dir / f"{name}.ipynb")
    port = _free_port()
    env = {**os.environ, "SCANGEN_ROOT": str(root), "PYTHONHASHSEED": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={lab_dir}",
         "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate", *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start: " + (server.stdout.read() if server.stdout else ""))
    yield {"root": root, "layout": layout, "pset": pset, "url": f"http://127.0.0.1:{port}", "lab_dir": lab_dir}
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


RUN_STATE_JS = """
const prompts = [...document.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell .jp-InputPrompt')]
  .map(p => p.textContent.trim());
const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
return {prompts: prompts,
        busy: prompts.some(p => p.includes('*')),
        idle: status ? status.getAttribute('data-status') : null};
"""
OUTPUTS_JS = """
const q = s => [...document.querySelectorAll(s)];
return {
  errors: q('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').map(e => e.textContent.slice(0, 400)),
  stderr: q('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').map(e => e.textContent.slice(0, 200)),
  charts: q('.jp-OutputArea-output.jp-RenderedVegaCommon5').map(
      e => ({drawn: !!e.querySelector('canvas, svg'), text: e.textContent.slice(0, 200)})),
  widgets: q('.jp-OutputArea-output .widget-hprogress, .jp-OutputArea-output .jupyter-widgets').length,
  text: document.querySelector('.jp-Notebook').textContent
};
"""


def _run_notebook(driver, url: str, name: str, timeout: float = 420.0) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/lab/tree/{name}.ipynb?token={TOKEN}&reset")
    wait = WebDriverWait(driver, 120)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
    wait.until(lambda d: d.execute_script("return document.querySelector('.jp-Notebook-ExecutionIndicator')"
                                          "?.getAttribute('data-status')") == "idle")
    for _ in range(5):  # the menu can open before the notebook panel takes it: retry until cells start
        for button in driver.find_elements(By.XPATH, "//button[normalize-space()='No']"):
            button.click()  # the "Jupyter news?" toast
        wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and normalize-space()='Run']"))).click()
        wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//div[contains(@class,'lm-Menu-itemLabel') and normalize-space()='Run All Cells']"))).click()
        time.sleep(5)
        if any(p != "[ ]:" for p in driver.execute_script(RUN_STATE_JS)["prompts"]):
            break
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = driver.execute_script(RUN_STATE_JS)
        if not state["busy"] and state["prompts"] and all(p not in ("[ ]:", "") for p in state["prompts"]):
            break
        time.sleep(2)
    else:
        pytest.fail(f"{name}: still running after {timeout:.0f} s: {driver.execute_script(RUN_STATE_JS)}")
    time.sleep(3)  # let the Vega views draw
    return driver.execute_script(OUTPUTS_JS)


def test_smoke_notebooks_run_in_jupyterlab_and_keep_the_cache(lab: dict, browser) -> None:
    from scangen.pipeline.runner import plan

    report = {}
    for name in lab["pset"].names():
        out = _run_notebook(browser, lab["url"], name)
        report[name] = out
        assert not out["errors"], f"{name}: error output {out['errors']}"
        for marker in ("Error loading script", "IProgress not found", "Traceback"):
            assert marker not in out["text"], f"{name}: {marker!r} in the notebook"
        assert all(c["drawn"] for c in out["charts"]), f"{name}: a chart did not render: {out['charts']}"
    n_charts = sum(len(r["charts"]) for r in report.values())
    assert n_charts >= 5, json.dumps({k: len(v["charts"]) for k, v in report.items()})
    assert report["02_scanner_bias"]["widgets"] >= 1, "no progress bar widget in the UMAP cell"
    stale = {s.name: s.reasons for s in plan("smoke", lab["layout"])[1] if not s.fresh}
    assert not stale, f"running the notebooks in JupyterLab invalidated the pipeline's cache: {stale}"
