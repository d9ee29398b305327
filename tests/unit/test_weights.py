"""Where the weights come from: explicit path, cache, download (real HTTP on loopback), failures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from app.depth.model import WEIGHTS_FILENAME, download_weights, file_digest, resolve_weights
from app.depth.registry import WeightsError
from support.servers import free_port


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/{WEIGHTS_FILENAME}"


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.glob("*.part"))


def test_explicit_path_wins(weights_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WEIGHTS_FILENAME).write_bytes(b"cached")
    assert resolve_weights(str(weights_path), cache=cache, url=closed_port_url()) == weights_path


def test_missing_explicit_path_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"Weights file not found: .*nope\.pt.*Download "):
        resolve_weights(str(tmp_path / "nope.pt"), cache=tmp_path, url=closed_port_url())


def test_cached_file_is_used_without_download(weights_path: Path, tmp_path: Path) -> None:
    shutil.copy(weights_path, tmp_path / WEIGHTS_FILENAME)
    assert resolve_weights(None, cache=tmp_path, url=closed_port_url()) == tmp_path / WEIGHTS_FILENAME


@pytest.mark.parametrize("kind", ["sha256", "gitblob"])
def test_download_verifies_and_renames(weights_server, weights_path, tmp_path, kind) -> None:
    cache = tmp_path / "cache"
    digest = f"{kind}:{file_digest(weights_path, kind)}"
    got = resolve_weights(None, cache=cache, url=f"{weights_server}/{WEIGHTS_FILENAME}", digest=digest)
    assert got == cache / WEIGHTS_FILENAME
    assert got.read_bytes() == weights_path.read_bytes()
    assert leftovers(cache) == []


def test_download_with_wrong_digest_keeps_nothing(weights_server, tmp_path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="corrupt or not the official file"):
        download_weights(f"{weights_server}/{WEIGHTS_FILENAME}", cache / WEIGHTS_FILENAME,
                         "sha256:" + "0" * 64, progress=False)
    assert list(cache.iterdir()) == []


def test_download_that_does_not_load_keeps_nothing(weights_server, tmp_path) -> None:
    junk = b"this is not a checkpoint"
    import hashlib

    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="Cannot read weights file"):
        download_weights(f"{weights_server}/junk.pt", cache / WEIGHTS_FILENAME,
                         "sha256:" + hashlib.sha256(junk).hexdigest(), progress=False)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("url", ["closed", "missing"])
def test_offline_or_missing_says_what_to_download(weights_server, tmp_path, url) -> None:
    url = closed_port_url() if url == "closed" else f"{weights_server}/absent.pt"
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as info:
        resolve_weights(None, cache=cache, url=url)
    message = str(info.value)
    assert "Could not download" in message and url in message
    assert "midas_v21_small_256.pt" in message and str(cache / WEIGHTS_FILENAME) in message
    assert list(cache.iterdir()) == []


def test_no_download_when_turned_off(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="downloading is off"):
        resolve_weights(None, cache=tmp_path, download=False)


def test_bad_digest_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="Bad weights digest"):
        download_weights("http://127.0.0.1:9/x", tmp_path / "w.pt", "md5:abc", progress=False)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_gitblob_digest_is_what_git_computes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"some bytes\0and more")
    git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert file_digest(path, "gitblob") == git.stdout.strip()


def test_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(WeightsError, match="Cannot write the weights cache"):
        resolve_weights(None, cache=blocker / "cache", url=closed_port_url())
