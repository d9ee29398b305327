"""The image's HEALTHCHECK: healthy only when the server answers ``GET /healthz`` with 200.

The server listens only once the weights are found, and a worker answers only once its model is loaded,
so a container is never healthy on missing weights. Standard library only: no curl in the image.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    host, _, port = os.environ.get("DEPTHMAP_BIND", "0.0.0.0:8000").rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            print(resp.status, resp.read(300).decode(errors="replace"))
            return 0 if resp.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(exc.code, exc.read(300).decode(errors="replace"))
        exc.close()
    except OSError as exc:
        print(f"{url}: {getattr(exc, 'reason', exc)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
