"""One sign-in script for every page that signs people in (shared/web/session.js), served beside each page's
own scripts by the service that owns the page, and told by each page what stops when a renewal fails."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp.test_utils import TestClient

from shared.web import SESSION_SCRIPT, WEB_DIR

ROOT = Path(__file__).resolve().parents[2]
# The static folders whose pages import "./session.js", and where each is served.
PAGES = {
    "/console/static": ROOT / "services/notification/console/static",
    "/dcc/static": ROOT / "services/agreements/console/static",
    "/patient/static": ROOT / "services/agreements/console/static",
}


async def test_each_pages_folder_serves_the_shared_script(stack: TestClient) -> None:
    shared = (WEB_DIR / SESSION_SCRIPT).read_text()
    for prefix in PAGES:
        served = await stack.get(f"{prefix}/{SESSION_SCRIPT}")  # public: no token
        assert served.status == 200 and "javascript" in served.content_type, prefix
        assert await served.text() == shared, prefix


def test_no_service_keeps_a_copy_and_every_page_says_what_stops() -> None:
    assert sorted((ROOT / "services").rglob(SESSION_SCRIPT)) == []
    importers = [
        script
        for folder in set(PAGES.values())
        for script in folder.glob("*.js")
        if f'from "./{SESSION_SCRIPT}"' in script.read_text()
    ]
    assert importers  # the pages still use it
    for script in importers:
        calls = re.findall(r"new Session\(\{(.*?)\n\s*\}\);", script.read_text(), re.S)
        assert calls, script
        for call in calls:
            assert re.search(r'^\s*notRenewed: "Your sign-in could not be renewed, .+"', call, re.M), script
