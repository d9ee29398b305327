"""Helper functions and constants for the tests; the fixtures are in conftest.py. pytest puts this folder
on ``sys.path`` through the ``pythonpath`` setting in pyproject.toml, so tests import it as ``helpers``."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = {p.stem: p for p in sorted((FIXTURES / "samples").iterdir()) if p.suffix in (".png", ".jpg")}


# Depth Anything V2 Small's manifest and the official code's outputs: 43 MB, read from the team's shared
# folder beside the clone (CI has it there), never copied into the repository
DAV2_SHARED = Path(__file__).parents[2] / "shared/models/depth_anything_v2_small"
# the official references: (photo, input size); files without a size tag are at 518
DAV2_REFERENCES = [(name, size) for size in (518, 364)
                   for name in ("astronaut", "chelsea", "coffee", "rocket")]


def dav2_reference(folder: Path, name: str, size: int, kind: str) -> np.ndarray:
    """The official Depth Anything V2 Small array for a sample at an input size: net_input, net_output or
    upsampled."""
    return np.load(folder / f"{name}{'' if size == 518 else f'.{size}'}.{kind}.npy")


def reference(name: str, kind: str) -> np.ndarray:
    """The official implementation's array for a sample: net_input, net_output or upsampled."""
    return np.load(FIXTURES / "reference" / f"{name}.{kind}.npy")


# images -----------------------------------------------------------------------------------------------

def photo_size(photo) -> Tuple[int, int]:
    """An image's (width, height), from its bytes, its file or a file object."""
    with Image.open(io.BytesIO(photo) if isinstance(photo, bytes) else photo) as im:
        return im.size


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    """A PIL image saved in ``fmt`` (PIL's name: "PNG", "JPEG", ...), as bytes."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def chunk(kind: bytes, body: bytes, crc: Optional[int] = None) -> bytes:
    """A PNG chunk; ``crc`` replaces the right checksum."""
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """An RGB PNG that declares ``width`` x ``height`` but carries (almost) no pixels: a decompression
    bomb's first bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def truncated(data: bytes) -> bytes:
    """The first half of a file (of a video: the index, written last, is cut off)."""
    return data[: len(data) // 2]


# requests through Flask's test client -----------------------------------------------------------------

def form_data(fields: Dict[str, object]) -> Dict[str, object]:
    """Test-client keyword arguments for a multipart body built in memory; ``(bytes, filename)`` values
    are files, lists give repeated fields. (The test client's own encoder spools bodies over 500 KB to
    temporary files it never closes.)"""
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import encode_multipart

    values: MultiDict = MultiDict()
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, tuple):
                item = FileStorage(io.BytesIO(item[0]), filename=item[1])
            values.add(name, item)
    boundary, body = encode_multipart(values)
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


def post_depth(client, data: bytes, filename: str = "photo.png", headers=None, **fields):
    """POST /api/v1/depth with ``data`` as the image and ``fields`` as the options."""
    return client.post("/api/v1/depth", headers=headers or {},
                       **form_data({"image": (data, filename), **fields}))


def serving(root: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the files in ``root`` until the generator is closed;
    yields its URL."""
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# the command line and a real server -------------------------------------------------------------------

DEPTHMAP = Path(sys.executable).parent / "depthmap"
REPO = Path(__file__).parents[1]


def this_checkout(env: Dict[str, str]) -> Dict[str, str]:
    """``env`` with this checkout first on the import path: the venv's ``depthmap`` may be an editable
    install of another working tree, and a test must run the code it sits beside."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}


def run_cli(args: List[str], env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``depthmap ARGS`` as a process, without this shell's MIDAS_WEIGHTS and DEPTHMAP_CACHE (``env`` is
    added); its output as text."""
    base = {k: v for k, v in os.environ.items() if k not in ("MIDAS_WEIGHTS", "DEPTHMAP_CACHE")}
    return subprocess.run([str(DEPTHMAP), *args], capture_output=True, text=True, timeout=timeout,
                          env=this_checkout({**base, **(env or {})}), cwd=cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Ends ``proc`` unless it ended already: SIGTERM, then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_server(weights: Path, log_path: Path, *args: str,
                   env: Optional[Dict[str, Optional[str]]] = None) -> Iterator[Tuple[str, subprocess.Popen]]:
    """``depthmap serve`` as a real process on a free loopback port; yields its URL and process. Its
    results go to a folder beside ``log_path`` unless ``env`` names a DEPTHMAP_DATA_DIR (or Redis)."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEPTHMAP_")}
    # results in a folder of this server's own (beside its log) unless the test shares one
    full_env = {**base, "MIDAS_WEIGHTS": str(weights), "DEPTHMAP_TORCH_THREADS": "2",
                "DEPTHMAP_DATA_DIR": str(log_path.parent / "data"), **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: leave the variable unset
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(DEPTHMAP), "serve", "--bind", f"127.0.0.1:{port}", *args],
                                env=this_checkout(full_env), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /healthz in 90 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url, proc
    finally:
        stop(proc)


# a real Redis (Debian's ``redis-server``) -----------------------------------------------------------

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """``redis-server`` on a free loopback port with a password, its files in ``folder``; ``stop`` and
    ``start`` again keep the port (and, through the dump file, the data). With ``tls`` (``tls_files``),
    it speaks TLS only (no plain port) and ``url`` is a ``rediss://`` URL that names the CA."""

    password = "test-password"

    def __init__(self, folder: Path, tls: Optional[Dict[str, Path]] = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.tls = tls
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        if self.tls:
            return self.tls_url(self.tls["ca"])
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def tls_url(self, ca: Path) -> str:
        """The ``rediss://`` URL that trusts ``ca`` (redis-py reads ``ssl_ca_certs`` from the query)."""
        return f"rediss://:{self.password}@127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"

    def start(self) -> None:
        ports = ["--port", str(self.port)]
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls["cert"]),
                     "--tls-key-file", str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"]),
                     "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *ports, "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--requirepass", self.password, "--save", "", "--appendonly", "no",
             "--maxmemory", "512mb", "--maxmemory-policy", "volatile-lru"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start (exit {self.proc.poll()})")
                time.sleep(0.05)

    def stop(self, save: bool = False) -> None:
        """Ends the server; with ``save``, as a Redis that keeps its data does (``SHUTDOWN SAVE`` writes
        its dump file, which the next ``start`` loads back)."""
        if self.proc is not None and self.proc.poll() is None:
            if save:
                import redis

                with redis.Redis.from_url(self.url) as client:
                    client.shutdown(save=True)
            else:
                self.proc.terminate()
            self.proc.wait(20)
        self.proc = None


def tls_files(folder: Path) -> Dict[str, Path]:
    """With the ``openssl`` command: a certificate authority, a server certificate it signed for
    127.0.0.1 (key, certificate), and a second CA that signed nothing (a wrong CA to trust)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ("ca", "ca_key", "key", "cert", "other_ca", "other_key")
    files = {name: folder / f"{name}.pem" for name in names}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    for ca, key, subject in (("ca", "ca_key", "/CN=depthmap test CA"),
                             ("other_ca", "other_key", "/CN=another CA")):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
                "-keyout", str(files[key]), "-out", str(files[ca]))
    csr = folder / "server.csr"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(files["key"]),
            "-out", str(csr))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey", str(files["ca_key"]),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(files["cert"]))
    return files


@contextlib.contextmanager
def running_worker(weights: Path, log_path: Path, env: Dict[str, str]) -> Iterator[subprocess.Popen]:
    """``depthmap worker`` as a real process (``env`` added to a clean environment), up once it logs that
    it runs; stopped (SIGTERM, then SIGKILL) at the end unless the test ended it already."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEPTHMAP_")}
    full_env = {**base, "MIDAS_WEIGHTS": str(weights), "DEPTHMAP_TORCH_THREADS": "1", **env}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(DEPTHMAP), "worker"], env=this_checkout(full_env), stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "video job worker:" not in log_path.read_text():
            if proc.poll() is not None:
                pytest.fail(f"worker exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker did not start in 120 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc)


# the browser tests (Debian's ``chromium`` + ``chromium-driver``, via Selenium) ------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

# the page is idle: a result is shown, every shown image has loaded (or been drawn in the page, by
# static/live.js), nothing is in flight
SETTLED = """
const figs = [...document.querySelectorAll('#grid figure:not([hidden])')];
return !document.getElementById('results').hidden && figs.length > 0 &&
  figs.every(f => { const i = f.querySelector('img');
                    const drawn = f.classList.contains('live');
                    return (drawn || (i.getAttribute('src') && i.complete && i.naturalWidth > 0)) &&
                           !f.classList.contains('loading'); }) &&
  !document.getElementById('status').classList.contains('busy');
"""


def skip_without_browser() -> None:
    """Called first thing in a browser test module: skips the module, visibly, where Chromium is not
    installed; fails instead where DEPTHMAP_REQUIRE_BROWSER is set (CI)."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        if os.environ.get("DEPTHMAP_REQUIRE_BROWSER"):
            raise RuntimeError("DEPTHMAP_REQUIRE_BROWSER is set but chromium/chromedriver are missing")
        pytest.skip("no Chromium here: apt install chromium chromium-driver to run the browser tests",
                    allow_module_level=True)


def make_driver(width: int = 1400, height: int = 1000, phone: bool = False, webgl: bool = False):
    """A headless Chromium. ``phone``: a phone's screen and touch; ``webgl``: headless Chromium has no
    GPU here, so it renders WebGL with SwiftShader, which recent Chromium enables only when asked."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    gpu = (("--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist") if webgl
           else ("--disable-gpu",))
    # these flags keep Chromium from reaching out to Google's services, which this network refuses
    for flag in ("--headless=new", "--no-sandbox", *gpu, "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", f"--window-size={width},{height}",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        opts.add_argument(flag)
    if phone:
        opts.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2, "touch": True}})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, for CSP violations
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def wait_settled(driver, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(SETTLED))


def upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "f-image").send_keys(str(path))


def save_screenshot(shown, name: str) -> None:
    """With SCREENSHOT_DIR set, saves a screenshot there: of the window (``shown`` a driver) or of one
    element of the page. JPEG keeps the README's pictures small; the page itself is what is being shown."""
    from selenium.webdriver.remote.webelement import WebElement

    out = os.environ.get("SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        png = shown.screenshot_as_png if isinstance(shown, WebElement) else shown.get_screenshot_as_png()
        with Image.open(io.BytesIO(png)) as shot:
            shot.convert("RGB").save(Path(out) / name, quality=85)


def marked(path: Path, name: str) -> str:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``."""
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", path.read_text(), re.S)
    assert match, f"{path} has no {name} markers"
    return match.group(1)
