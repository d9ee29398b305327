"""Files made from a cached depth map without new inference: lossless depth (16-bit PNG, PFM, EXR), 3D
(a coloured point cloud as PLY, a displaced-grid mesh as GLB) and a zip of everything for one photo.

Plain numpy functions, no Flask, like ``app.imaging.pipeline``. The depth is MiDaS's relative inverse depth
(larger = nearer, no unit); none of these files claims metres.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import OpenEXR
from PIL import Image, PngImagePlugin

from ..options import SceneOptions
from .pipeline import map_range
from .zipstream import Buffer, ZipStream

# a robust depth range for 3D: percent of the values clipped at each end, so a few stray pixels do not
# flatten the relief of everything else
SCENE_CLIP = 0.5


def _finite(depth: np.ndarray) -> np.ndarray:
    """``(H, W)`` any float -> ``(H, W)`` float32 with NaN and inf replaced by 0."""
    d = np.asarray(depth, dtype=np.float32)
    if not np.isfinite(d).all():
        d = np.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)
    return d


def to_uint16(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(H, W)`` float32 raw depth -> ``(H, W)`` uint16 levels, ``lo`` -> 0 and ``hi`` -> 65535 (rounded,
    clipped; 0 everywhere when ``hi <= lo``), so ``depth ≈ lo + level / 65535 * (hi - lo)``."""
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((depth - lo) * scale + 0.5, 0, 65535).astype(np.uint16)


def depth_png16(depth: np.ndarray) -> bytes:
    """``(H, W)`` raw depth -> 16-bit grayscale PNG, min-max scaled to 0 … 65535 (near = bright, no
    clipping, 256× finer than the 8-bit view). The range is kept in the PNG's text chunks
    ``depth_min``/``depth_max``, so the raw values come back to 1/65535 of the range."""
    d = _finite(depth)
    lo, hi = (float(d.min()), float(d.max())) if d.size else (0.0, 0.0)
    levels = to_uint16(d, lo, hi)
    info = PngImagePlugin.PngInfo()
    info.add_text("depth_min", repr(lo))
    info.add_text("depth_max", repr(hi))
    info.add_text("Description", DEPTH_DESCRIPTION + ", min-max scaled")
    buf = io.BytesIO()
    Image.fromarray(levels).save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


PFM_STRIP = 256  # rows turned upside down at a time


def depth_pfm_parts(depth: np.ndarray) -> Iterator[Buffer]:
    """``(H, W)`` raw depth -> PFM (Portable Float Map, one channel, float32, little-endian), the format
    MiDaS's own ``utils.write_pfm`` writes, as pieces to write one after the other. PFM stores rows
    bottom to top: a strip of rows is turned at a time, never a copy of the whole map."""
    d = np.asarray(depth, dtype="<f4")
    height, width = d.shape
    yield f"Pf\n{width} {height}\n-1.0\n".encode("ascii")  # negative scale = little-endian
    for end in range(height, 0, -PFM_STRIP):
        yield np.ascontiguousarray(d[max(0, end - PFM_STRIP):end][::-1])


def depth_pfm(depth: np.ndarray) -> bytes:
    """``depth_pfm_parts`` as one ``bytes``."""
    return b"".join(depth_pfm_parts(depth))


DEPTH_DESCRIPTION = "MiDaS relative inverse depth (larger = nearer, no unit)"


def depth_exr(depth: np.ndarray) -> bytes:
    """``(H, W)`` raw depth -> OpenEXR, one float32 channel ``Y`` (what every EXR viewer and compositor
    shows as gray), lossless ZIP compression, the values as they are (no scaling). The header carries
    the range as ``depth_min``/``depth_max`` and what the values mean as ``comments``."""
    d = np.ascontiguousarray(_finite(depth), dtype=np.float32)
    lo, hi = (float(d.min()), float(d.max())) if d.size else (0.0, 0.0)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
              "depth_min": lo, "depth_max": hi, "comments": DEPTH_DESCRIPTION}
    buf = io.BytesIO()
    OpenEXR.File(header, {"Y": d}).write(buf)
    return buf.getvalue()


def read_pfm(data: bytes) -> np.ndarray:
    """The inverse of ``depth_pfm`` (also reads big-endian and 3-channel PFM): ``(H, W[, 3])`` float32."""
    parts = data.split(b"\n", 3)
    if len(parts) < 4 or parts[0] not in (b"Pf", b"PF"):
        raise ValueError("not a PFM file")
    width, height = (int(v) for v in parts[1].split())
    scale = float(parts[2])
    channels = 3 if parts[0] == b"PF" else 1
    arr = np.frombuffer(parts[3], dtype="<f4" if scale < 0 else ">f4", count=width * height * channels)
    shape = (height, width, 3) if channels == 3 else (height, width)
    return arr.reshape(shape)[::-1].astype(np.float32)


# 3D --------------------------------------------------------------------------------------------------

# a triangle whose corners' distances differ by more than this factor spans a depth edge: it is left out
# rather than drawn as a "rubber sheet" between the foreground and what lies behind it
EDGE_RATIO = 1.06


def scene_points(depth: np.ndarray, opts: SceneOptions) -> np.ndarray:
    """``(H, W)`` relative inverse depth -> ``(H, W, 3)`` float32 camera-space points (x right, y up,
    the camera at the origin looking down -z, as glTF and three.js expect). The inverse depth, robustly
    normalised to [0, 1] (0.5 % clipped each end), is interpolated between the near plane (distance 1)
    and the far plane (1 + depth_scale) *in inverse depth*, so it stays a disparity-like quantity; the
    pinhole has its centre in the middle and a focal length from ``fov``."""
    d = _finite(depth)
    height, width = d.shape
    lo, hi = map_range(d, SCENE_CLIP) if d.size else (0.0, 0.0)
    n = np.clip((d - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(d)
    near, far = 1.0, 1.0 + opts.depth_scale
    z = 1.0 / (1.0 / far + n * (1.0 / near - 1.0 / far))
    focal = (width / 2.0) / math.tan(math.radians(opts.fov) / 2.0)
    u = (np.arange(width, dtype=np.float32) + 0.5 - width / 2.0) / focal
    v = (np.arange(height, dtype=np.float32) + 0.5 - height / 2.0) / focal
    pts = np.empty((height, width, 3), dtype=np.float32)
    pts[..., 0] = u[None, :] * z
    pts[..., 1] = -v[:, None] * z
    pts[..., 2] = -z
    return pts


def point_cloud_ply(photo: np.ndarray, depth: np.ndarray, opts: SceneOptions) -> List[Buffer]:
    """Binary little-endian PLY: one vertex per pixel of the (already downscaled) depth, x y z float32
    and the photo's red green blue uchar; as its header and its vertices, to write one after the other
    (joined, they would be a second copy of the file)."""
    pts = scene_points(depth, opts).reshape(-1, 3)
    rgb = np.ascontiguousarray(photo.reshape(-1, 3), dtype=np.uint8)
    vertex = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                       ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        "comment depth-map studio: MiDaS relative depth, near plane at 1, "
        f"depth_scale {opts.depth_scale:g}, fov {opts.fov:g} deg (not metres)\n"
        f"element vertex {len(vertex)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    return [header.encode("ascii"), vertex]


def grid_triangles(z: np.ndarray) -> np.ndarray:
    """Two triangles per grid cell of ``(H, W)`` distances ``z``, as ``(N, 3)`` little-endian uint32
    vertex indices, the first triangle of every kept cell then the second, without the cells that span
    a depth edge (see ``EDGE_RATIO``). Filled a column at a time: at grid 2048 the cells' corners and
    candidate triangles would otherwise be held several times over (about 400 MB)."""
    height, width = z.shape
    idx = np.arange(height * width, dtype=np.uint32).reshape(height, width)
    a, b = idx[:-1, :-1], idx[:-1, 1:]  # top-left, top-right
    c, d = idx[1:, :-1], idx[1:, 1:]  # bottom-left, bottom-right
    far = np.maximum(np.maximum(z[:-1, :-1], z[:-1, 1:]), np.maximum(z[1:, :-1], z[1:, 1:]))
    near = np.minimum(np.minimum(z[:-1, :-1], z[:-1, 1:]), np.minimum(z[1:, :-1], z[1:, 1:]))
    keep = (far <= near * EDGE_RATIO).ravel()
    del far, near
    kept = int(np.count_nonzero(keep))
    faces = np.empty((2 * kept, 3), "<u4")
    # counter-clockwise seen from the camera (front faces point at it)
    for row, corners in ((0, (a, c, b)), (kept, (b, c, d))):
        for col, corner in enumerate(corners):
            faces[row:row + kept, col] = corner.ravel()[keep]
    return faces


def _srgb_to_linear16() -> np.ndarray:
    c = np.arange(256) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return (lin * 65535.0 + 0.5).astype(np.uint16)


_SRGB_TO_LINEAR16 = _srgb_to_linear16()


def mesh_glb(photo: np.ndarray, depth: np.ndarray, opts: SceneOptions) -> List[Buffer]:
    """glTF 2.0 binary: the depth as a displaced grid (one vertex per pixel of the downscaled depth),
    coloured per vertex by the photo (linear 16-bit RGBA, as glTF defines COLOR_0), triangles across
    depth edges left out. Unlit, so it looks like the photo in any viewer. As its headers and its three
    arrays, to write one after the other (joined, they would be a second copy of the file)."""
    pts = scene_points(depth, opts)
    faces = grid_triangles(-pts[..., 2])
    positions = pts.reshape(-1, 3)
    # glTF vertex colours are linear, not sRGB like the photo: 16 bits keep the dark tones after the
    # conversion; RGBA rather than RGB keeps each vertex 4-byte aligned (alpha = 1)
    rgba = np.empty((len(positions), 4), "<u2")
    rgba[:, :3] = _SRGB_TO_LINEAR16[np.asarray(photo, dtype=np.uint8).reshape(-1, 3)]
    rgba[:, 3] = 65535
    blobs = [positions, rgba, faces]
    offsets, offset = [], 0
    for blob in blobs:
        offsets.append(offset)
        offset += blob.nbytes
    gltf = {
        "asset": {"version": "2.0", "generator": "depth-map studio"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "depth"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "indices": 2,
                                    "material": 0, "mode": 4}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0,
                                                "roughnessFactor": 1},
                       "doubleSided": True, "extensions": {"KHR_materials_unlit": {}}}],
        "buffers": [{"byteLength": offset}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": offsets[0], "byteLength": blobs[0].nbytes, "target": 34962},
            {"buffer": 0, "byteOffset": offsets[1], "byteLength": blobs[1].nbytes, "target": 34962},
            {"buffer": 0, "byteOffset": offsets[2], "byteLength": blobs[2].nbytes, "target": 34963},
        ],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": len(positions), "type": "VEC3",
             "min": positions.min(axis=0).tolist(), "max": positions.max(axis=0).tolist()},
            {"bufferView": 1, "componentType": 5123, "normalized": True, "count": len(rgba), "type": "VEC4"},
            {"bufferView": 2, "componentType": 5125, "count": int(faces.size), "type": "SCALAR"},
        ],
    }
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned: JSON padded with spaces
    padding = b"\0" * (-offset % 4)
    binary = offset + len(padding)
    total = 12 + 8 + len(text) + 8 + binary
    head = b"".join([struct.pack("<4sII", b"glTF", 2, total), struct.pack("<I4s", len(text), b"JSON"), text,
                     struct.pack("<I4s", binary, b"BIN\0")])
    return [head, *blobs, padding]


# zip -------------------------------------------------------------------------------------------------

README_TXT = """Depth-map studio export: {name}

photo.png            the photo as the depth map sees it (oriented, at most {max_side} px)
heatmap.png          the depth through the colormap ({colormap})
overlay.png          the heatmap over the photo
gray.png             the display depth, 8-bit (near = {near})
depth.npy            float32 H x W raw MiDaS output: relative inverse depth, larger = nearer, no unit
depth.pfm            the same array as PFM (float32, rows bottom to top)
depth.exr            the same array as OpenEXR (float32, channel Y; depth_min/depth_max in the header)
depth16.png          the same, min-max scaled to 16 bits (near = bright); depth_min/depth_max text chunks
pointcloud.ply       3D points coloured by the photo ({grid_note})
mesh.glb             the same as a displaced-grid mesh (glTF 2.0, vertex colours)
options.json         the options these files were made with

The depth is relative: it is comparable within this photo, not between photos, and it is not in metres.
The 3D files assume a field of view of {fov:g} degrees and a far end {ratio:g} times as far as the near end.
"""


# makes one file, as pieces to write one after the other; None: it could not be made now
Made = Callable[[], Optional[Iterable[Buffer]]]


def bundle(name: str, files: Iterable[Tuple[str, Made]], info: Mapping[str, Any]) -> Iterator[bytes]:
    """The zip of ``files`` (file name, and what makes it) plus README.txt and options.json, in a folder
    ``name``, made while it is sent: each file is made when its turn comes and let go once written, so
    the zip of a 16 MP photo (half a GB) is never in memory, nor all its files at once. A file that
    could not be made is named in options.json (``left_out``). Everything binary is stored, not
    deflated: PNGs are compressed already, and float32 depth deflates poorly (12 MP, measured by
    benchmarks/bench_exports.py: 124 MB in 8.0 s deflated at level 1, 139 MB in 4.1 s stored)."""
    out, left_out = ZipStream(), []
    for fname, make in files:
        parts = make()
        if parts is None:
            left_out.append(fname)
            continue
        yield from out.add_parts(f"{name}/{fname}", parts)
        del parts
    info = {**info, "left_out": left_out} if left_out else info
    yield from out.add(f"{name}/options.json", json.dumps(info, indent=2).encode(), deflate=True)
    yield from out.add(f"{name}/README.txt", README_TXT.format(name=name, **info["readme"]).encode(),
                       deflate=True)
    yield from out.close()
