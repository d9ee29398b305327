"""Export sizes and times for one photo: every download of the studio's "Downloads" panel.

    .venv/bin/python benchmarks/bench_exports.py [--weights PATH] [--photo PATH] [--side 4000]

Makes a 12-megapixel photo (a sample photo resized to 4000×3000, saved as JPEG) unless given one,
computes its depth once through the app (test client, in process; synthetic weights made from the test
manifest unless --weights), then fetches each export from the cached depth and prints its size and the
server-side time. The 3D files are printed at each grid size the page offers.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights")
    ap.add_argument("--photo")
    ap.add_argument("--side", type=int, default=4000, help="longer side of the made photo (4:3)")
    args = ap.parse_args()
    weights = args.weights
    if not weights:
        from support.synthetic import write_synthetic_weights

        weights = str(write_synthetic_weights(ROOT / "tests/fixtures/state_dict_manifest.json",
                                              Path(tempfile.mkdtemp()) / "synthetic.pt"))
    if args.photo:
        data, name = Path(args.photo).read_bytes(), Path(args.photo).name
    else:
        with Image.open(ROOT / "tests/fixtures/samples/chelsea.png") as im:
            big = im.convert("RGB").resize((args.side, args.side * 3 // 4), Image.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, format="JPEG", quality=92)
        data, name = buf.getvalue(), "photo12mp.jpg"

    from app import create_app
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import encode_multipart

    app = create_app({"MIDAS_WEIGHTS": weights, "CACHE_BYTES": 2**30})
    client = app.test_client()
    boundary, body = encode_multipart(MultiDict({"image": FileStorage(io.BytesIO(data), filename=name),
                                                 "views": "none"}))
    r = client.post("/api/v1/depth", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert r.status_code == 200, r.json
    depth_id, width, height = r.json["depth_id"], r.json["width"], r.json["height"]
    print(f"# photo {width}×{height} ({width * height / 1e6:.1f} MP), upload {len(data) / 1e6:.2f} MB")
    print("| export | size | server time |")
    print("|---|---|---|")
    rows = [("raw depth .npy (float32)", f"/api/v1/depth/{depth_id}.npy"),
            ("16-bit PNG", f"/api/v1/depth/{depth_id}.png"),
            ("PFM (float32)", f"/api/v1/depth/{depth_id}.pfm"),
            ("heatmap PNG", f"/api/v1/depth/{depth_id}/heatmap.png"),
            ("overlay PNG", f"/api/v1/depth/{depth_id}/overlay.png"),
            ("gray PNG", f"/api/v1/depth/{depth_id}/gray.png")]
    for grid in (256, 512, 1024, 2048):
        rows.append((f"point cloud .ply, grid {grid}", f"/api/v1/depth/{depth_id}.ply?grid={grid}"))
        rows.append((f"mesh .glb, grid {grid}", f"/api/v1/depth/{depth_id}.glb?grid={grid}"))
    rows.append(("zip of everything (grid 512)", f"/api/v1/depth/{depth_id}.zip"))
    for label, url in rows:
        t0 = time.perf_counter()
        resp = client.get(url)
        ms = (time.perf_counter() - t0) * 1000
        assert resp.status_code == 200, (url, resp.status_code)
        print(f"| {label} | {len(resp.data) / 1e6:.2f} MB | {ms:.0f} ms |")


if __name__ == "__main__":
    main()
