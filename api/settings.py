"""Process configuration, read once from the environment."""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from compliance.encryption.keys import root_keyring_from_environ
from compliance.identity.keys import RootKeyError, root_key_from_environ
from tenants.db import APP_DATABASE_URL_VARIABLE, asyncpg_dsn

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ISSUER = "http://127.0.0.1:8000"


class ConfigurationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    environment: str = "development"
    max_body_bytes: int = 1_048_576
    # The largest uploaded file (a check-up report); only multipart requests to /graphql may be this large.
    max_upload_bytes: int = 10 * 1024 * 1024
    pool_max_size: int = 20
    web_root: Path = REPO_ROOT / "web"
    issuer: str = DEFAULT_ISSUER  # the OAuth2 issuer: `iss` of access tokens, base of the discovery URLs
    # GraphQL cost budgets per minute (schema/rate_limits.py): per user principal, per integrator client.
    rate_limit_user_per_minute: int = 10_000
    rate_limit_client_per_minute: int = 50_000
    # Every Redis key of this deployment starts with it: deployments (or test runs) may share a server.
    redis_namespace: str = "yiyang"
    # Where notification e-mails go (YIYANG_SMTP_URL, YIYANG_MAIL_FROM); None: e-mail is skipped.
    smtp: "SmtpSettings | None" = None

    @property
    def development(self) -> bool:
        return self.environment != "production"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not environ.get(name)]
        if missing:
            raise ConfigurationError(f"set {' and '.join(missing)} (or start the product with `yiyang run`)")
        environment = environ.get("YIYANG_ENV", "development")
        try:
            root_key_from_environ(environ)  # refused at start rather than at the first token
            root_keyring_from_environ(environ)  # likewise a malformed YIYANG_ROOT_KEY_NEW
        except RootKeyError as problem:
            raise ConfigurationError(str(problem)) from None
        app_database_url_setting(environ)  # read where the pool opens (tenants/db.py), checked here
        return cls(
            database_url=environ["DATABASE_URL"],
            redis_url=environ["REDIS_URL"],
            environment=environment,
            max_body_bytes=positive_int_setting(environ, "YIYANG_MAX_BODY_BYTES", 1_048_576),
            max_upload_bytes=positive_int_setting(environ, "YIYANG_MAX_UPLOAD_BYTES", 10 * 1024 * 1024),
            pool_max_size=positive_int_setting(environ, "YIYANG_DB_POOL_SIZE", 20),
            issuer=issuer_setting(environ.get("YIYANG_ISSUER", DEFAULT_ISSUER), environment),
            rate_limit_user_per_minute=positive_int_setting(
                environ, "YIYANG_RATE_LIMIT_USER_PER_MINUTE", 10_000
            ),
            rate_limit_client_per_minute=positive_int_setting(
                environ, "YIYANG_RATE_LIMIT_CLIENT_PER_MINUTE", 50_000
            ),
            redis_namespace=redis_namespace_setting(environ.get("YIYANG_REDIS_NAMESPACE", "yiyang")),
            smtp=smtp_setting(environ),
        )


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    mail_from: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False


def smtp_setting(environ: Mapping[str, str] = os.environ) -> SmtpSettings | None:
    """YIYANG_SMTP_URL, smtp://[user:password@]host[:port][?starttls=true], with YIYANG_MAIL_FROM, the
    sender address; unset, notifications are delivered in the app only."""
    given = environ.get("YIYANG_SMTP_URL", "")
    if not given:
        return None
    # Not echoed back: the URL may hold the password.
    problem = "YIYANG_SMTP_URL must be smtp://[user:password@]host[:port][?starttls=true]"
    url = urlsplit(given)
    try:
        port = url.port or 25
    except ValueError:
        raise ConfigurationError(problem) from None
    flags = parse_qs(url.query)
    starttls = flags.pop("starttls", ["false"])
    if url.scheme != "smtp" or not url.hostname or url.path not in ("", "/") or flags or url.fragment:
        raise ConfigurationError(problem)
    if starttls not in (["true"], ["false"]):
        raise ConfigurationError(problem)
    mail_from = environ.get("YIYANG_MAIL_FROM", "")
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", mail_from):
        raise ConfigurationError("YIYANG_SMTP_URL needs YIYANG_MAIL_FROM, the sender's e-mail address")
    return SmtpSettings(
        host=url.hostname,
        port=port,
        mail_from=mail_from,
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        starttls=starttls == ["true"],
    )


def app_database_url_setting(environ: Mapping[str, str]) -> str | None:
    """YIYANG_APP_DATABASE_URL: how the pool logs in as the application's role `yiyang_app` where the
    server wants a password; unset, DATABASE_URL with its user replaced (trust or certificate auth)."""
    given = environ.get(APP_DATABASE_URL_VARIABLE, "")
    if not given:
        return None
    try:
        asyncpg_dsn(given)
    except ValueError:
        raise ConfigurationError(f"{APP_DATABASE_URL_VARIABLE} must be a postgres:// URL") from None
    if given == environ["DATABASE_URL"]:
        raise ConfigurationError(
            f"{APP_DATABASE_URL_VARIABLE} must log in as the application's role, not as DATABASE_URL's owner"
        )
    return given


def redis_namespace_setting(given: str) -> str:
    if not re.fullmatch(r"[a-z0-9_-]{1,40}", given):
        raise ConfigurationError(
            f"YIYANG_REDIS_NAMESPACE must be 1-40 lower-case letters, digits, '-' or '_', not {given!r}"
        )
    return given


def issuer_setting(given: str, environment: str) -> str:
    """An issuer identifier as RFC 8414 §2 wants it: a URL without query or fragment, https in production."""
    url = urlsplit(given)
    schemes = {"https"} if environment == "production" else {"https", "http"}
    if url.scheme not in schemes or not url.netloc or url.query or url.fragment or given.endswith("/"):
        raise ConfigurationError(
            f"YIYANG_ISSUER must be an {' or '.join(sorted(schemes))} URL without query, fragment or"
            f" trailing slash, not {given!r}"
        )
    return given


def positive_int_setting(environ: Mapping[str, str], name: str, default: int) -> int:
    """The whole number ≥ 1 in environ[name], or default when unset; anything else is refused."""
    given = environ.get(name, "")
    if not given:
        return default
    if not given.isdigit() or int(given) < 1:
        raise ConfigurationError(f"{name} must be a whole number of at least 1, not {given!r}")
    return int(given)
