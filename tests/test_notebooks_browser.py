"""The smoke-set notebooks run in a real JupyterLab (headless Chromium driven by Selenium): no error
output, every chart drawn by JupyterLab's own (offline) Vega-Lite renderer, progress bars as widgets,
and afterwards the pipeline still finds every notebook up to date (running interactively rewrites
byte-identical results and figures).

Made for a loaded 2-core CI machine: the server gets its own settings, workspaces and runtime folders
(nothing from ~/.jupyter leaks in; concurrent runs do not share state), settings that keep JupyterLab's
modal dialogs away at the source (no news/update prompts, the default kernel starts without asking, no
autosave), cells are run through JupyterLab's command registry (`window.jupyterapp`) instead of menu
clicks, every wait is an explicit poll with a generous limit, and any dialog that still appears is
logged and dismissed, or fails the test when it reports an error (a dead kernel, a failed save).

Skipped, with a message, where Chromium, its driver or Selenium is missing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

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
NOT_IN_BROWSER: tuple[str, ...] = ()
"""Smoke notebooks not driven through JupyterLab (none: 07's earlier stop was its missing
`os.chdir(paths.ROOT)`, so its relative store path failed from the notebook folder).
`SCANGEN_BROWSER_ONLY=07_harmonisation,...` runs only those notebooks (a debugging aid)."""
LOG = logging.getLogger(__name__)

# Settings overrides (the app settings dir's overrides.json) that keep unattended runs free of dialogs.
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
}
# Page config (the app settings dir's page_config.json): no announcements plugin, no "build recommended".
LAB_PAGE_CONFIG = {"buildCheck": False, "buildAvailable": False,
                   "disabledExtensions": ["@jupyterlab/apputils-extension:announcements"]}
# A dialog whose title or text matches this reports a failure: the test fails with its text.
ERROR_DIALOG = re.compile(r"error|fail|died|dead|restart|exception|traceback|could not|cannot", re.IGNORECASE)
START_LIMIT_S = 240.0  # server start, page load, kernel start: generous for a loaded 2-core machine
RUN_LIMIT_S = 900.0    # one notebook's run-all


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_config_dirs(base: Path) -> dict[str, Path]:
    """Fresh settings/workspaces/config/runtime folders under `base`, with the overrides written."""
    dirs = {k: base / k for k in ("app_settings", "user_settings", "workspaces", "config", "runtime")}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    (dirs["app_settings"] / "overrides.json").write_text(json.dumps(LAB_OVERRIDES, indent=1))
    (dirs["app_settings"] / "page_config.json").write_text(json.dumps(LAB_PAGE_CONFIG, indent=1))
    return dirs


@pytest.fixture(scope="module")
def lab(smoke_run: dict, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the smoke run's root, the smoke notebooks parameterised into `lab/`, and a
    JupyterLab server on it (kernels get `SCANGEN_ROOT` = the copy)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from scangen.pipeline.layout import Layout

    src = smoke_run["layout"]
    base = tmp_path_factory.mktemp("browser")
    root = base / "root"
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
    dirs = _lab_config_dirs(base / "jupyter")
    port = _free_port()
    env = {**os.environ, "SCANGEN_ROOT": str(root), "PYTHONHASHSEED": "0",
           "PYTHONFAULTHANDLER": "1",  # a kernel that crashes leaves its Python stack in the server log
           "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_RUNTIME_DIR": str(dirs["runtime"])}
    log_path = base / "jupyterlab.log"
    with open(log_path, "w") as log_file:  # a file, not a pipe nobody reads: a full pipe would block the server
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={lab_dir}",
             "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.expose_app_in_browser=True", f"--LabApp.app_settings_dir={dirs['app_settings']}",
             f"--LabApp.user_settings_dir={dirs['user_settings']}", f"--LabApp.workspaces_dir={dirs['workspaces']}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + START_LIMIT_S
    while time.time() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start: " + log_path.read_text()[-4000:])
    yield {"root": root, "layout": layout, "pset": pset, "url": f"http://127.0.0.1:{port}", "lab_dir": lab_dir,
           "log": log_path}
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
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
    options.set_capability("unhandledPromptBehavior", "accept")  # "leave page?" when moving to the next notebook
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(START_LIMIT_S)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


PANEL_READY_JS = """
const app = window.jupyterapp, path = arguments[0];
const w = app && app.shell ? app.shell.currentWidget : null;
if (!w || !w.context || w.context.path !== path || !w.context.isReady || !w.sessionContext) return null;
const kernel = w.sessionContext.session ? w.sessionContext.session.kernel : null;
return kernel && kernel.status === 'idle' && w.content.widgets.length > 0 ? kernel.name : null;
"""
RUN_ALL_JS = """
const app = window.jupyterapp;
window.__scangenRunAll = {done: false};
app.commands.execute('notebook:run-all-cells').then(
  ok => { window.__scangenRunAll = {done: true, ok: ok}; },
  err => { window.__scangenRunAll = {done: true, ok: false, error: String(err)}; });
"""
RUN_STATE_JS = """
const prompts = [...document.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell .jp-InputPrompt')]
  .map(p => p.textContent.trim());
const w = window.jupyterapp.shell.currentWidget;
const kernel = w && w.sessionContext && w.sessionContext.session ? w.sessionContext.session.kernel : null;
return {prompts: prompts, run: window.__scangenRunAll || null,
        busy: prompts.some(p => p.includes('*')),
        kernel: kernel ? kernel.status : null};
"""
SHUTDOWN_JS = """
const done = arguments[arguments.length - 1];
const w = window.jupyterapp.shell.currentWidget;
(w && w.sessionContext ? w.sessionContext.shutdown() : Promise.resolve()).then(() => done(null), e => done(String(e)));
"""
DIALOGS_JS = """
return [...document.querySelectorAll('.jp-Dialog')].map(d => ({
  title: (d.querySelector('.jp-Dialog-header') || {textContent: ''}).textContent.trim(),
  body: (d.querySelector('.jp-Dialog-body') || {textContent: ''}).textContent.trim().slice(0, 600),
  buttons: [...d.querySelectorAll('.jp-Dialog-button')].map(b => b.textContent.trim())}));
"""
CLICK_DIALOG_BUTTON_JS = """
const d = document.querySelector('.jp-Dialog');
const b = d ? (d.querySelector(arguments[0]) || d.querySelector('.jp-Dialog-button')) : null;
if (b) b.click();
return !!b;
"""
OUTPUTS_JS = """
const q = s => [...document.querySelectorAll(s)];
return {
  errors: q('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').map(e => e.textContent.slice(0, 400)),
  stderr: q('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').map(e => e.textContent.slice(0, 200)),
  charts: q('.jp-OutputArea-output.jp-RenderedVegaCommon5').map(
      e => ({drawn: !!e.querySelector('canvas, svg'), text: e.textContent.slice(0, 200)})),
  widgets: q('.jp-OutputArea-output .widget-hprogress, .jp-OutputArea-output .jupyter-widgets').length,
  not_run: q('.jp-Notebook .jp-Cell.jp-CodeCell .jp-InputPrompt').map(p => p.textContent.trim())
      .filter(p => p === '[ ]:' || p === '' || p.includes('*')).length,
  text: document.querySelector('.jp-Notebook').textContent,
  cells: q('.jp-Notebook .jp-Cell.jp-CodeCell').map(c => ({
      prompt: (c.querySelector('.jp-InputPrompt') || {textContent: ''}).textContent.trim(),
      input: (c.querySelector('.jp-InputArea-editor') || {textContent: ''}).textContent.slice(0, 60),
      output: (c.querySelector('.jp-OutputArea') || {textContent: ''}).textContent.slice(0, 300)}))
};
"""


def _handle_dialogs(driver, name: str, seen: list[dict]) -> None:
    """Log and dismiss every open JupyterLab dialog; fail the test on one that reports an error."""
    for _ in range(10):
        dialogs = driver.execute_script(DIALOGS_JS)
        if not dialogs:
            return
        dialog = {"notebook": name, **dialogs[0]}
        seen.append(dialog)
        LOG.warning("JupyterLab dialog while running %s: %s", name, json.dumps(dialog))
        if ERROR_DIALOG.search(f"{dialog['title']} {dialog['body']}"):
            pytest.fail(f"{name}: JupyterLab showed an error dialog: {json.dumps(dialog)}")
        # a kernel choice is accepted (the preselected kernel is the notebook's own); anything else is declined
        button = ".jp-mod-accept" if re.search("kernel", dialog["title"], re.IGNORECASE) else ".jp-mod-reject"
        driver.execute_script(CLICK_DIALOG_BUTTON_JS, button)
        time.sleep(1)
    pytest.fail(f"{name}: JupyterLab dialogs keep coming back: {json.dumps(seen[-3:])}")


def _wait_for(driver, name: str, what: str, check: Callable[[], object], limit_s: float, seen: list[dict],
              state: Callable[[], object] = lambda: None):
    """Poll `check` (dismissing dialogs in between) until it returns something truthy; fail after `limit_s`."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        _handle_dialogs(driver, name, seen)
        value = check()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"{name}: {what} not reached within {limit_s:.0f} s; state {state()}; dialogs {seen}")


def _run_notebook(driver, url: str, name: str, seen: list[dict]) -> dict:
    """Open `name` in JupyterLab, run all cells through the command registry, return what the page shows."""
    driver.get(f"{url}/lab/tree/{name}.ipynb?token={TOKEN}&reset")
    _wait_for(driver, name, "notebook open with an idle kernel",
              lambda: driver.execute_script(PANEL_READY_JS, f"{name}.ipynb"), START_LIMIT_S, seen)
    _handle_dialogs(driver, name, seen)
    driver.execute_script(RUN_ALL_JS)
    state = lambda: driver.execute_script(RUN_STATE_JS)  # noqa: E731
    _wait_for(driver, name, "every cell run",
              lambda: (lambda s: s["run"] and s["run"]["done"] and not s["busy"] and s["kernel"] == "idle")(state()),
              RUN_LIMIT_S, seen, state)
    outputs = lambda: driver.execute_script(OUTPUTS_JS)  # noqa: E731
    try:  # let the Vega views draw; the assertions report any that did not
        _wait_for(driver, name, "charts drawn", lambda: all(c["drawn"] for c in outputs()["charts"]), 60, seen)
    except pytest.fail.Exception:
        pass
    out = {**outputs(), "run": driver.execute_script(RUN_STATE_JS)["run"]}
    error = driver.execute_async_script(SHUTDOWN_JS)  # free the kernel's memory before the next notebook
    if error:
        LOG.warning("%s: kernel shutdown failed: %s", name, error)
    return out


def test_smoke_notebooks_run_in_jupyterlab_and_keep_the_cache(lab: dict, browser) -> None:
    from scangen.pipeline.runner import plan

    report, dialogs = {}, []
    only = [n for n in os.environ.get("SCANGEN_BROWSER_ONLY", "").split(",") if n]  # debugging aid: a subset
    for name in [n for n in lab["pset"].names() if n not in NOT_IN_BROWSER and (not only or n in only)]:
        try:
            out = _run_notebook(browser, lab["url"], name, dialogs)
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\nJupyterLab server log (end):\n{lab['log'].read_text()[-3000:]}")
        report[name] = out
        cells = json.dumps(out["cells"], indent=1)
        assert not out["errors"], f"{name}: error output {out['errors']}"
        for marker in ("Error loading script", "IProgress not found", "Traceback"):
            assert marker not in out["text"], f"{name}: {marker!r} in the notebook; cells: {cells}"
        assert out["not_run"] == 0, f"{name}: {out['not_run']} code cells did not run ({out['run']}); cells: {cells}"
        assert all(c["drawn"] for c in out["charts"]), f"{name}: a chart did not render: {out['charts']}"
    if dialogs:
        print("JupyterLab dialogs dismissed:", json.dumps(dialogs, indent=1))
    if only:
        return
    n_charts = sum(len(r["charts"]) for r in report.values())
    assert n_charts >= 5, json.dumps({k: len(v["charts"]) for k, v in report.items()})
    assert report["02_scanner_bias"]["widgets"] >= 1, "no progress bar widget in the UMAP cell"
    stale = {s.name: s.reasons for s in plan("smoke", lab["layout"])[1] if not s.fresh}
    assert not stale, f"running the notebooks in JupyterLab invalidated the pipeline's cache: {stale}"
