"""Screenshots of the MLflow UI and TensorBoard for ``docs/browsing.md``, from a real run.

    python docs/screenshots.py            # rewrites docs/images/*.png

Runs a small real job (``run.py`` with tiny overrides) in a scratch directory, starts
``mlflow ui`` and ``tensorboard`` on free 127.0.0.1 ports and drives a headless Chromium
(Debian: ``apt-get install chromium``) through the DevTools protocol: it opens each page, waits
until the page shows what a user came for (the run's name, a chart's title, a tag) and nothing
that would make it the wrong picture (a ``step_time`` chart on the Model metrics tab), and saves
a 1280x800 PNG (1280x1000 for the chart tabs: two full rows of charts).
``tests/browser/test_ui.py`` uses the same pieces to check the pages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
BIN = Path(sys.executable).parent
WIDTH, HEIGHT = 1280, 800

# The job the pictures show: every callback, a few epochs of digits at AlexNet's minimum input.
JOB = [
    "model=alexnet",
    "callbacks=full",
    "data.limit=160",
    "data.image_size=67",
    "trainer.epochs=4",
    "trainer.batch_size=16",
    "tracking.log_model=false",
]

# Text every page of the deep DOM (shadow roots and same-origin iframes included): TensorBoard
# renders its dashboards inside shadow roots, which ``document.body.innerText`` does not see.
DEEP_TEXT = """
(() => {
  const parts = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) { parts.push(node.textContent); return; }
    if (node.nodeType !== Node.ELEMENT_NODE && node.nodeType !== Node.DOCUMENT_NODE
        && node.nodeType !== Node.DOCUMENT_FRAGMENT_NODE) return;
    if (node.tagName === 'SCRIPT' || node.tagName === 'STYLE') return;
    if (node.shadowRoot) walk(node.shadowRoot);
    if (node.tagName === 'IFRAME') {
      try { if (node.contentDocument) walk(node.contentDocument); } catch (e) {}
    }
    for (const child of node.childNodes) walk(child);
    if (node.tagName === 'TD' || node.tagName === 'TH') parts.push(' ');
    if (node.tagName === 'DIV' || node.tagName === 'TR' || node.tagName === 'LI') parts.push('\\n');
  };
  walk(document);
  return parts.join('').replace(/[ \\t]+/g, ' ');
})()
"""

# What a first visit stores in the browser, set beforehand so the pictures show the runs, not
# MLflow's first-visit pop-ups (the assistant panel, the "detect issues" guide).
MLFLOW_FIRST_VISIT = """
try {
  // MLflow's useLocalStorage hook keeps each value as JSON under '<key>_v<version>'.
  const keep = (key, value) => localStorage.setItem(key + '_v1', JSON.stringify(value));
  keep('mlflow.assistant.panelOpen', false);
  keep('mlflow.assistant.fab.autoOpenedOnFirstLoad', true);
  keep('mlflow.detectIssues.guidanceShown', true);
} catch (e) {}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Service:
    """A UI server started on 127.0.0.1 (``mlflow ui`` or ``tensorboard``)."""

    name: str
    command: list[str]
    port: int
    log: Path
    process: subprocess.Popen | None = None
    # what starts ``command``: the tests pass one that forks it from a preloaded interpreter
    launcher: Callable[..., subprocess.Popen] = subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        # MLflow 3's UI otherwise starts a job runner and huey consumers for GenAI jobs (each
        # imports MLflow, and a SIGTERM to the UI leaves them running); the pages need none.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with self.log.open("ab") as out:
            self.process = self.launcher(self.command, stdout=out, stderr=out, env=env)
        return self

    def wait(self, path: str = "/", timeout: float = 180.0) -> Service:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return self
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.3)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} did not come up on {self.url}:\n{tail}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None


def mlflow_ui(store_uri: str, log: Path) -> Service:
    port = free_port()
    command = [
        str(BIN / "mlflow"),
        "ui",
        "--backend-store-uri",
        store_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return Service("mlflow ui", command, port, log)


def tensorboard(logdir: Path, log: Path) -> Service:
    port = free_port()
    command = [
        str(BIN / "tensorboard"),
        "--logdir",
        str(logdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--reload_interval",
        "0",  # read the finished run once
    ]
    return Service("tensorboard", command, port, log)


# -- the browser -----------------------------------------------------------------------------


@dataclass
class Browser:
    """A headless Chromium with one tab, driven through the DevTools protocol (over aiohttp's
    websocket client, which MLflow already depends on)."""

    binary: str
    profile: Path
    process: subprocess.Popen | None = None
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _session: Any = None
    _ws: Any = None
    _id: int = 0

    def start(self) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={self.profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and len(active.read_text().split()) >= 2):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{self.binary} did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        self._run(self._connect(port))
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.viewport()
        return self

    def viewport(self, width: int = WIDTH, height: int = HEIGHT) -> None:
        """Size the page's window. MLflow draws only the chart cards in view, so reading every
        chart of a tab (not only the first rows) needs a window as tall as the tab."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _run(self, coroutine: Any) -> Any:
        return self._loop.run_until_complete(coroutine)

    async def _connect(self, port: int) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as answer:
            pages = [t for t in await answer.json() if t.get("type") == "page"]
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._id += 1
        await self._ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads((await self._ws.receive()).data)
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self._run(asyncio.wait_for(self._call(method, params), 60))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def before_each_page(self, script: str) -> None:
        self.call("Page.addScriptToEvaluateOnNewDocument", source=script)

    def open(self, url: str) -> None:
        """Load ``url`` afresh (through a blank page: a URL differing only in its ``#`` part
        would be a same-document jump that single-page apps may not follow)."""
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """The rendered page's text, shadow roots and iframes included."""
        return self.evaluate(DEEP_TEXT) or ""

    def html(self) -> str:
        return self.evaluate("document.documentElement.outerHTML") or ""

    def wait_for_text(self, *needles: str, timeout: float = 90.0, settle: float = 1.0) -> str:
        """Poll the rendered text until it holds every needle; returns it. Raises with what the
        page showed instead."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(needle in text for needle in needles):
                time.sleep(settle)  # let charts finish drawing
                return self.text()
            time.sleep(0.4)
        missing = [n for n in needles if n not in text]
        raise AssertionError(f"the page never showed {missing}; it showed:\n{text[:3000]}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._ws is not None:
                self._run(self._ws.close())
            if self._session is not None:
                self._run(self._session.close())
        self._loop.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


@contextlib.contextmanager
def browser(profile: Path) -> Iterator[Browser]:
    binary = chromium_path()
    if binary is None:
        raise RuntimeError("no chromium: apt-get install chromium")
    driver = Browser(binary, profile).start()
    try:
        yield driver
    finally:
        driver.close()


# -- a real run and the pages that show it -------------------------------------------------


@dataclass
class Run:
    """A finished job: its run directory, MLflow store, experiment and run."""

    run_dir: Path
    store_uri: str
    experiment_id: str
    run_id: str
    run_name: str


def run_job(workdir: Path, overrides: list[str] = JOB) -> Run:
    """``python run.py ...`` in ``workdir`` (its own ``mlflow.db``), as a user starts it."""
    from mlflow import MlflowClient

    run_dir = workdir / "outputs" / "run"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides, f"hydra.run.dir={run_dir}"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the job failed:\n{done.stderr[-3000:]}")
    store_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(store_uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    return Run(run_dir, store_uri, run.info.experiment_id, run_id, run.info.run_name)


@dataclass(frozen=True)
class Shot:
    """A page to photograph: its URL, the text it must show before it is taken, and text it
    must not show (what would make it the wrong picture); a taller window shows more of a page
    (MLflow's chart grid: two full rows of charts)."""

    url: str
    shows: tuple[str, ...]
    hides: tuple[str, ...] = ()
    height: int = HEIGHT


# What measures the machine, not the model: MLflow files it under system/ (callbacks' system_keys),
# so these names must not title a chart of the Model metrics tab.
SYSTEM_ONLY = ("step_time", "samples_per_sec", "epoch_time", "predict_latency_s")


def mlflow_pages(base: str, run: Run) -> dict[str, Shot]:
    """name -> the page and what it must show. ``workflowType`` opens the model-training view
    whatever the browser last chose (MLflow 3.17 keeps that choice in the browser and ignores
    the experiment's kind tag when it does). A drawn chart's legend reads "<run> (<key>)"; the
    System metrics tab titles a chart without the ``system/`` of its key."""
    view = "?workflowType=machine_learning"
    experiment = f"{base}/#/experiments/{run.experiment_id}"
    page = f"{experiment}/runs/{run.run_id}"
    name = run.run_name
    return {
        "mlflow_runs": Shot(f"{experiment}/runs{view}", (name, "Run Name")),
        "mlflow_run_overview": Shot(f"{page}{view}", (name, "Description", "Trained")),
        "mlflow_run_metrics": Shot(
            f"{page}/model-metrics{view}",
            ("Model metrics", f"{name} (accuracy)", f"{name} (loss)"),
            hides=SYSTEM_ONLY,
            height=1000,
        ),
        "mlflow_run_system_metrics": Shot(
            f"{page}/system-metrics{view}",
            # disk_bytes_written, one value, is a bar chart: its legend is the run's name alone.
            ("System metrics", f"{name} (system/epoch_time)", f"{name} (system/samples_per_sec)"),
            hides=(f"{name} (loss)",),
            height=1000,
        ),
        "mlflow_run_artifacts": Shot(
            f"{page}/artifacts{view}", (name, "predict_class_counts.json", "config.yaml")
        ),
    }


def tensorboard_pages(base: str) -> dict[str, Shot]:
    return {
        "tensorboard_scalars": Shot(
            f"{base}/#scalars&tagFilter=epoch_", ("epoch_loss", "epoch_accuracy")
        ),
        "tensorboard_images": Shot(f"{base}/#images", ("augmented_samples",)),
        "tensorboard_hparams": Shot(f"{base}/#hparams", ("trainer.epochs", "model.name")),
    }


def take(browser: Browser, pages: dict[str, Shot], out: Path, only: list[str]) -> list[Path]:
    taken = []
    for name, shot in pages.items():
        if only and name not in only:
            continue
        browser.viewport(height=shot.height)
        try:
            browser.open(shot.url)
            text = browser.wait_for_text(*shot.shows, timeout=90)
            wrong = [hidden for hidden in shot.hides if hidden in text]
            if wrong:
                raise AssertionError(f"{name}: {shot.url} shows {wrong}, which it must not")
            taken.append(browser.screenshot(out / f"{name}.png"))
        finally:
            browser.viewport()
        print(f"{name}: {shot.url}", flush=True)
    return taken


def main(only: list[str]) -> None:
    """Take every picture, or only those named (``python docs/screenshots.py mlflow_runs``)."""
    with tempfile.TemporaryDirectory(prefix="trainkit-screenshots-") as scratch:
        workdir = Path(scratch)
        print("training a small job ...", flush=True)
        run = run_job(workdir)
        ui = mlflow_ui(run.store_uri, workdir / "mlflow-ui.log").start()
        board = tensorboard(run.run_dir / "tensorboard", workdir / "tensorboard.log").start()
        try:
            ui.wait("/health")
            board.wait()
            with browser(workdir / "chromium") as chromium:
                chromium.before_each_page(MLFLOW_FIRST_VISIT)
                take(chromium, mlflow_pages(ui.url, run), IMAGES, only)
                take(chromium, tensorboard_pages(board.url), IMAGES, only)
        finally:
            ui.stop()
            board.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
