"""Requests through Flask's test client: multipart bodies built in memory, and the depth API's POST."""

from __future__ import annotations

import io
from typing import Dict


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
