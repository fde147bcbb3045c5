"""The dashboard's pages: static HTML whose scripts read the REST API.

Every page is a file in templates/ with one placeholder, the path prefix the app is served
under (`root_path`: a mount point or a proxy's `--root-path`), so the pages, their assets
and their API calls stay under that prefix. Scripts and styles are separate files (no
inline code), so a Content-Security-Policy of `script-src 'self'` holds.
"""

from __future__ import annotations

import html
import importlib.util
import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

router = APIRouter(include_in_schema=False)


# page -> (title until its script sets a better one, plotly needed)
PAGES = {
    "index": ("Studies", False),
    "study": ("Study", True),
    "trial": ("Trial", True),
    "compare": ("Compare trials", True),
    "workers": ("Workers", False),
}


# scripts a page needs besides its own
PAGE_SCRIPTS = {"study": ("pareto.js",)}


@cache
def _template(name: str) -> str:
    title, plotly = PAGES[name]
    scripts = ["plotly.min.js", "axes.js"] if plotly else []
    scripts += ["common.js", *PAGE_SCRIPTS.get(name, ()), f"{name}.js"]
    tags = "\n".join(f'<script src="__ROOT__/assets/{s}" defer></script>' for s in scripts)
    base = (TEMPLATES / "base.html").read_text(encoding="utf-8")
    body = (TEMPLATES / f"{name}.html").read_text(encoding="utf-8")
    return (
        base.replace("__TITLE__", html.escape(title))
        .replace("__SCRIPTS__", tags)
        .replace("__PAGE__", name)
        .replace("__BODY__", body)
    )


def _page(request: Request, name: str) -> HTMLResponse:
    root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    return HTMLResponse(
        _template(name).replace("__ROOT__", root),
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request) -> HTMLResponse:
    return _page(request, "index")


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(request: Request, study_id: int) -> HTMLResponse:
    return _page(request, "study")


@router.get("/trials/{trial_id}", response_class=HTMLResponse)
def trial_page(request: Request, trial_id: int) -> HTMLResponse:
    return _page(request, "trial")


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request) -> HTMLResponse:
    return _page(request, "compare")


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request) -> HTMLResponse:
    return _page(request, "workers")


@cache
def plotly_js() -> Path:
    """plotly.js as bundled by the `plotly` Python package: served locally, no CDN."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


@router.get("/assets/plotly.min.js")
def plotly_asset() -> FileResponse:
    try:
        path = plotly_js()
    except FileNotFoundError as e:
        raise HTTPException(404, str(e)) from e
    return FileResponse(
        path, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
    )


# Routes other issues add; a page only calls those this app has, so no probe ever 404s.
OPTIONAL = {
    "diagnosis": "/api/trials/{}/diagnosis",
    "report": "/api/studies/{}/report",
    "model": "/api/trials/{}/model",
    "workers": "/api/workers",
}


def _shape(path: str) -> str:
    """/api/trials/{trial_id}/model -> /api/trials/{}/model, whatever a route names its ids."""
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/"))


@router.get("/api/dashboard/features")
def features(request: Request) -> dict[str, bool]:
    """Which optional API routes this service has."""
    paths = {  # routers included in routers are nested: flatten them
        _shape(r.path or "")
        for r in iter_route_contexts(request.app.routes)
        if isinstance(r.original_route, APIRoute)
    }
    return {name: path in paths for name, path in OPTIONAL.items()}


def install(app: FastAPI) -> None:
    """Add the pages, their scripts and styles, and plotly.js to `app`."""
    app.include_router(router)
    app.mount("/assets", StaticFiles(directory=STATIC), name="dashboard-assets")
