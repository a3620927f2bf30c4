"""The ASGI application factory: routes, middleware and the lifespan that opens the pools."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq import create_pool
from arq.connections import RedisSettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from api.authorize import authorize_endpoint
from api.exports import ACCESS_REPORT_CSV_PATH, AccessReportExport
from api.files import (
    CHECKUP_REPORT_PATH,
    CHECKUP_REPORTS,
    RESIDENT_PHOTO_PATH,
    RESIDENT_PHOTOS,
    SealedFileDownload,
)
from api.graphql import GraphQLEndpoint, GraphQLView
from api.health import healthz
from api.metrics import Metrics
from api.middleware import BodySizeLimitMiddleware, MetricsMiddleware, RequestIdMiddleware
from api.oauth import AUTHORIZE_PATH, REVOKE_PATH, TOKEN_PATH, revocation_endpoint, token_endpoint
from api.settings import Settings
from api.wellknown import jwks, openid_configuration
from compliance.identity.authorization import ensure_first_party_client
from compliance.identity.login_throttle import LoginThrottle
from schema.rate_limits import RateLimiter, RateLimitPolicy
from schema.root import build_schema
from tenants.db import PoolSettings, close_database, open_database, pool_usage
from tenants.registry import TenantDirectory

UPLOAD_OVERHEAD_BYTES = 64 * 1024


def _static_root(settings: Settings) -> str:
    built = settings.web_root / "dist"
    return str(built if (built / "index.html").exists() else settings.web_root / "public")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_environ()
    metrics = Metrics(pool_usage)
    view = GraphQLView(
        build_schema(),
        graphql_ide="graphiql" if settings.development else None,
        allow_queries_via_get=True,
        # File uploads (GraphQL multipart request spec): only with a preflight header (api/graphql.py).
        multipart_uploads_enabled=True,
        tenants=TenantDirectory(),
        metrics=metrics,
    )
    view.max_upload_bytes = settings.max_upload_bytes
    graphql = GraphQLEndpoint(view, settings.issuer, graphiql=settings.development)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        size = settings.pool_max_size
        await open_database(settings.database_url, PoolSettings(min_size=min(2, size), max_size=size))
        app.state.redis = await create_pool(RedisSettings.from_dsn(settings.redis_url))
        namespace = settings.redis_namespace
        view.rate_limiter = RateLimiter(
            app.state.redis, RateLimitPolicy.from_settings(settings), prefix=f"{namespace}:ratelimit"
        )
        # One throttle for the sign-in page and for GraphQL's password checks: the same counts.
        app.state.login_throttle = LoginThrottle(app.state.redis, prefix=f"{namespace}:login")
        view.login_throttle = app.state.login_throttle
        await ensure_first_party_client(settings.issuer)  # the web app's OAuth2 client (idempotent)
        try:
            yield
        finally:
            await app.state.redis.aclose()
            await close_database()

    async def metrics_endpoint(request: Request) -> Response:
        body = await metrics.exposition_with_workers(request.app.state.redis, settings.redis_namespace)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route(CHECKUP_REPORT_PATH, SealedFileDownload(graphql, CHECKUP_REPORTS), methods=["GET"]),
            Route(RESIDENT_PHOTO_PATH, SealedFileDownload(graphql, RESIDENT_PHOTOS), methods=["GET"]),
            Route(ACCESS_REPORT_CSV_PATH, AccessReportExport(graphql), methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/.well-known/jwks.json", jwks, methods=["GET"]),
            Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
            # Other methods reach the endpoint too: it refuses them in RFC 6749 JSON, not a plain 405.
            Route(TOKEN_PATH, token_endpoint, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route(REVOKE_PATH, revocation_endpoint, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route(AUTHORIZE_PATH, authorize_endpoint, methods=["GET", "POST"]),
            Mount("/", StaticFiles(directory=_static_root(settings), html=True), name="web"),
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(
                BodySizeLimitMiddleware,
                max_bytes=settings.max_body_bytes,
                # A file at the cap, plus the multipart framing and the operations document.
                max_upload_body_bytes=settings.max_upload_bytes + UPLOAD_OVERHEAD_BYTES,
                upload_paths=frozenset({"/graphql"}),
            ),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.graphql_view = view
    return app
