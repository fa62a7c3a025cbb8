"""The DCC and the patient page are static files served by agreements under the console's CSP (issue 15),
and the words they show for codes cover every code the API accepts (issue 19)."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from services.agreements.pages import CONSOLE_DIR
from services.agreements.vocabulary import CATEGORY_LABELS, ORGANISATION_KIND_LABELS, ORGANISATION_KINDS, PURPOSE_LABELS
from shared.policy import CATEGORIES


async def test_the_pages_are_static_files_under_the_consoles_policy(stack: TestClient) -> None:
    for path, script in (("/dcc/", "/dcc/static/dcc.js"), ("/patient/", "/patient/static/patient.js")):
        page = await stack.get(path)  # public: no token
        assert page.status == 200 and page.content_type == "text/html"
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        html = await page.text()
        assert f'<script type="module" src="{script}"></script>' in html
        served = await stack.get(script)
        assert served.status == 200 and "javascript" in served.content_type
    # No inline script or style anywhere: the policy allows only the pages' own files.
    for html_file in CONSOLE_DIR.glob("*.html"):
        text = html_file.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text) and "<style" not in text and " style=" not in text
        assert "token-input" not in text  # nobody pastes a token


async def test_every_code_the_api_accepts_has_words(stack: TestClient) -> None:
    words = await (await stack.get("/dcc/static/vocabulary.json")).json()
    assert words == await (await stack.get("/patient/static/vocabulary.json")).json()
    assert set(words["categories"]) == set(CATEGORIES)
    assert set(words["purposes"]) == set(PURPOSE_LABELS)
    assert set(words["organisationKinds"]) == set(ORGANISATION_KINDS)
    # Each category and organisation type has words of its own (the code with its hyphens taken out is the
    # fallback for a category added without them).
    assert set(CATEGORIES) <= set(CATEGORY_LABELS) and set(ORGANISATION_KINDS) <= set(ORGANISATION_KIND_LABELS)
    assert words["categories"]["pathology"] == "test results (pathology)"
