"""A real Redis for the tests: Debian's ``redis-server`` on a free loopback port with a password, plain or
TLS only, and the certificates (made with ``openssl``) for the TLS one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

import pytest

from support.servers import free_port

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
