"""``create_app(store, settings)``: the FastAPI application over a store.

The JSON API lives under ``/api`` (``server.api``), the HTML pages (``server.pages``) everywhere
else. ``server.errors`` turns every error into a JSON body ``{error, message, detail}`` for
``/api`` and an error page for the rest; ``server.openapi`` makes ``/openapi.json`` describe
what the routes really answer, errors included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from predwatch import __version__
from predwatch.config import Settings
from predwatch.server import openapi
from predwatch.server.commit import GroupCommit
from predwatch.server.compat import OriginalErrors
from predwatch.server.errors import install_error_handlers
from predwatch.server.guards import RequestGuard
from predwatch.storage.base import Store


def create_app(store: Store, settings: Settings | None = None) -> FastAPI:
    """The predwatch server over ``store``.

    Args:
        store: an open store; the caller owns it (closes it after the app stops).
        settings: limits, auth and stream settings (default: ``Settings.from_env()``).

    Raises:
        MissingDependency: jinja2 (the ``[server]`` extra) is not installed.
    """
    from predwatch.server.api import analysis as api_analysis
    from predwatch.server.api import jobs as api_jobs
    from predwatch.server.api import predictions as api_predictions
    from predwatch.server.api import runs as api_runs
    from predwatch.server.api import sets as api_sets
    from predwatch.server.pages import site as pages

    settings = settings or Settings.from_env()
    group_commit = GroupCommit(store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await to_thread.run_sync(group_commit.close)  # answers every queued request first

    app = FastAPI(
        title="predwatch",
        version=__version__,
        summary="What a language model answers while it is fine-tuned.",
        description=openapi.DESCRIPTION,
        docs_url=None,  # served below from vendored Swagger UI assets: no CDN, works offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.group_commit = group_commit  # ingest: one transaction for concurrent requests
    app.state.settings = settings
    app.state.poll_seconds = min(0.5, settings.heartbeat_seconds)
    app.state.error_page = pages.error_page

    api = [api_runs.router, api_predictions.router, api_analysis.router,
           api_sets.router,  # sets: prediction sets and cost estimates
           api_jobs.router]  # checkpoint jobs (recording off the training path)
    for router in api:
        app.include_router(router)
    app.include_router(pages.router)
    # Every route, flat: what a 405's Allow header lists, and what the OpenAPI document checks.
    app.state.routes = [route for router in [*api, *pages.ROUTERS] for route in router.routes]
    install_error_handlers(app)
    # NUL characters in the path or query (400) and bodies over the limit (413), app-wide.
    app.add_middleware(RequestGuard, limit=settings.max_body_bytes)
    # Outermost: error bodies of the original routes carry a human-readable ``error``.
    app.add_middleware(OriginalErrors)
    openapi.install(app, [route for router in api for route in router.routes])
    _install_docs(app)
    return app


def _install_docs(app: FastAPI) -> None:
    """OpenAPI docs at ``/docs`` with Swagger UI served by predwatch itself (vendored from npm)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    from predwatch.server import assets  # its router comes with the pages

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="predwatch API",
            swagger_js_url=assets.asset_url("vendor/swagger-ui/swagger-ui-bundle.js"),
            swagger_css_url=assets.asset_url("vendor/swagger-ui/swagger-ui.css"),
            swagger_favicon_url=assets.asset_url("favicon.svg"),
        )
