"""The workflow view: a static page (HTML/CSS/JS shipped in the package) served by the plugin app.

The page itself holds no data, so it is served without authentication (Airflow shows it in
an iframe of its own UI); everything it displays comes from the authenticated API routes,
which the browser calls on the same origin with the UI's session cookie. The page's
Content-Security-Policy allows only this origin: nothing is loaded from anywhere else.
The stage names the page shows come from stages.py, put into the page as it is served.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from fuxictr_workflow.domain.stages import FINAL_TASK_STATUSES, STAGE_NAMES

STATIC_DIR = Path(__file__).with_name("static")
# chart.umd.min.js: Chart.js (MIT, chart.js-LICENSE.md beside it), shipped so the page loads
# nothing from elsewhere
ASSETS = {
    "app.js": "text/javascript",
    "charts.js": "text/javascript",
    "chart.umd.min.js": "text/javascript",
    "style.css": "text/css",
}

# frame-ancestors 'self': only Airflow's own UI (same origin) may embed the page.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["UI"])


@router.get("/ui", include_in_schema=False)
def ui_redirect() -> RedirectResponse:
    # relative: the page's own relative URLs (static/..., the API) need the trailing slash
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui/", include_in_schema=False)
def ui_page() -> HTMLResponse:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for name, values in (("stages", STAGE_NAMES), ("final", sorted(FINAL_TASK_STATUSES))):
        page = page.replace(f"{{{{ {name} }}}}", html.escape(json.dumps(list(values)), quote=True))
    return HTMLResponse(page, headers=SECURITY_HEADERS)


@router.get("/ui/static/{name}", include_in_schema=False)
def ui_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no UI asset {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)
