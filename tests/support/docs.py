"""The parts of the documentation that are generated from the code, as the pages hold them."""

from __future__ import annotations

import re
from pathlib import Path


def marked(path: Path, name: str) -> str:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``."""
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", path.read_text(), re.S)
    assert match, f"{path} has no {name} markers"
    return match.group(1)
