"""The page in English and Simplified Chinese: the browser's preference, a remembered choice (cookie),
complete catalogs, a compiled catalog that matches its source, and API errors that stay English."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from support.forms import form_data

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "app/translations/zh_Hans/LC_MESSAGES/messages.po"
MO = PO.with_suffix(".mo")


@pytest.mark.parametrize("accept, lang, title", [
    ("zh-CN,zh;q=0.9,en;q=0.5", "zh-Hans", "深度图工作室"),
    ("zh-Hans", "zh-Hans", "深度图工作室"),
    ("zh-TW", "zh-Hans", "深度图工作室"),  # the only Chinese we have
    ("en-GB,en;q=0.9", "en", "Depth-map studio"),
    ("fr-FR", "en", "Depth-map studio"),
    ("", "en", "Depth-map studio"),
])
def test_the_browser_preference_picks_the_language(client, accept, lang, title) -> None:
    r = client.get("/", headers={"Accept-Language": accept} if accept else {})
    html = r.get_data(as_text=True)
    assert f'<html lang="{lang}">' in html and f"<title>{title}</title>" in html
    assert "Set-Cookie" not in r.headers  # nothing is stored unless the user chooses


def test_a_chosen_language_is_remembered_and_wins_over_the_browser(client) -> None:
    r = client.get("/lang/zh_Hans?next=/%3Fviews%3Dgray")
    assert r.status_code == 303 and r.headers["Location"] == "/?views=gray"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("lang=zh_Hans;") and "SameSite=Lax" in cookie and "Max-Age=31536000" in cookie
    page = client.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "生成深度图" in page and "将照片拖放到这里" in page and "（色盲友好）" in page
    scripts = json.loads(html.unescape(re.search(r'data-i18n="([^"]*)"', page).group(1)))
    assert scripts["Rendering…"] == "正在渲染…" and scripts["near"] == "近"  # the scripts' strings
    back = client.get("/lang/en?next=/")
    assert back.headers["Set-Cookie"].startswith("lang=en;")
    english = client.get("/", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "Generate depth map" in english


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example",
                                    "javascript:x"])
def test_the_switch_never_redirects_off_site(client, target) -> None:
    r = client.get("/lang/en", query_string={"next": target})
    assert r.status_code == 303 and r.headers["Location"] == "/"


def test_unknown_language_is_a_404(client) -> None:
    assert client.get("/lang/xx").status_code == 404


def test_api_errors_stay_english_with_stable_codes(client, samples) -> None:
    client.set_cookie("lang", "zh_Hans")
    r = client.post("/api/v1/depth", headers={"Accept-Language": "zh-CN"},
                    **form_data({"image": (samples["rocket"], "r.jpg"), "colormap": "rainbow"}))
    assert r.status_code == 422 and r.json["error"] == "bad_option"
    assert r.json["message"].startswith("Option 'colormap'")
    client.delete_cookie("lang")


def test_every_marked_string_has_a_translation(tmp_path) -> None:
    pot = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg", "-k", "N_",
                    "--no-location", "-o", str(pot), "."], cwd=ROOT, check=True, capture_output=True)
    with open(pot, "rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    with open(PO, "rb") as f:
        catalog = read_po(f)
    have = {m.id: m.string for m in catalog if m.id}
    assert wanted - set(have) == set(), "run the update in README (Languages)"
    assert not [k for k in wanted if not have[k]], "untranslated strings"
    for m in catalog:  # placeholders survive translation
        assert sorted(re.findall(r"\{\w+\}|%\(\w+\)s", m.id or "")) == sorted(
            re.findall(r"\{\w+\}|%\(\w+\)s", m.string or "")) or not m.id, m.id


def test_the_compiled_catalog_matches_its_source() -> None:
    with open(PO, "rb") as f:
        source = {m.id: m.string for m in read_po(f) if m.id}
    with open(MO, "rb") as f:
        compiled = {m.id: m.string for m in read_mo(f) if m.id}
    assert compiled == source, "recompile: pybabel compile -d app/translations"
