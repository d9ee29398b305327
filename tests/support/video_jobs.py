"""A real server's video job API, spoken to with ``requests``: send a clip, wait for its job to end."""

from __future__ import annotations

import time
from typing import Dict

import requests

ENDED = ("done", "failed", "cancelled")


def send(url: str, data: bytes, name: str = "scene.mp4", **fields: str) -> requests.Response:
    """POST /api/v1/video with ``data`` as the clip and ``fields`` as the options; the answer as it is."""
    return requests.post(url + "/api/v1/video", files={"video": (name, data, "video/mp4")}, data=fields,
                         timeout=120)


def wait(url: str, job_id: str, timeout: float = 300) -> Dict:
    """The job's status once it has ended (done, failed or cancelled); fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=30).json()
        if body["state"] in ENDED:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
