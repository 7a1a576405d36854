"""Django settings for Parley: every value comes from the environment, with laptop defaults."""

from __future__ import annotations

import base64
import ipaddress
import re
from pathlib import Path

import dj_database_url
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.core.exceptions import ImproperlyConfigured

from backend.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", True)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105 - refused above when DEBUG is off

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])


def _field_encryption_keys() -> list[str]:
    """Return the Fernet keys for secrets at rest; the first encrypts, all decrypt (rotation)."""
    keys = env_list("FIELD_ENCRYPTION_KEY", [])
    if keys:
        return keys
    if not DEBUG:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be set when DEBUG is off "
            "(generate one: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        )
    # A development key derived from SECRET_KEY, so a laptop needs no configuration.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"parley-field-encryption").derive(
        SECRET_KEY.encode()
    )
    return [base64.urlsafe_b64encode(derived).decode()]


FIELD_ENCRYPTION_KEYS = _field_encryption_keys()

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "backend.sites",
    "backend.providers",
    "backend.chat",
    "backend.front",
    "backend.quotas",
    "backend.agents",
    "backend.kb",
    "backend.tickets",
    "backend.ops",
]

MIDDLEWARE = [
    "backend.ops.middleware.RequestIdMiddleware",
    "backend.ops.middleware.UnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backend.urls"
ASGI_APPLICATION = "backend.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web process and background work share one SQLite file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that went away fails fast (the visitor gets `unavailable`) instead of hanging a reply.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 3, minimum=1)
    )
    # Django's backend, checking a persistent connection only after it sat idle (backend/ops/postgresql).
    DATABASES["default"]["ENGINE"] = "backend.ops.postgresql"
# The history read before each provider call is prepared after this many runs on a PostgreSQL connection
# (backend/ops/postgresql); 0 turns that off, as a transaction-pooling PgBouncer before 1.21 requires.
DATABASE_PREPARE_AFTER = env_int("DATABASE_PREPARE_AFTER", 2, minimum=0)
# Persistent connections are checked before reuse, so a database restart heals by itself.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
# Per asyncio pool of a process (the channel layer's, the reply claims'): redis-py's default of 100 refuses
# calls beyond 100 concurrent replies.
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 1000, minimum=10)
if REDIS_URL:
    # Only agent messages and state changes travel here, never streaming tokens (a full channel drops sends).
    CHANNEL_LAYERS = {
        "default": {
            # channels_redis's layer, sending nothing to groups nobody is in (backend/ops/layers.py).
            "BACKEND": "backend.ops.layers.GroupCheckingRedisChannelLayer",
            "CONFIG": {
                # Reads must outlast the layer's 1-second BZPOPMIN (backend/ops/layers.py), or idle listeners time out.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_connect_timeout": 2,
                        "socket_timeout": 15,
                        "socket_keepalive": True,
                        "max_connections": REDIS_MAX_CONNECTIONS,
                    }
                ],
                "prefix": env_str("REDIS_PREFIX", "parley"),
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 200, minimum=10),
                "expiry": 60,
                "group_expiry": 86400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Rate-limit counters live in the cache, which several processes share only through Redis.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [path for path in [BASE_DIR / "static"] if path.is_dir()]
WHITENOISE_USE_FINDERS = DEBUG

# Chat behaviour.
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 64 * 1024, minimum=1024)
CHAT_HISTORY_TOKEN_BUDGET = env_int("CHAT_HISTORY_TOKEN_BUDGET", 3000, minimum=100)
CHAT_HISTORY_MAX_MESSAGES = env_int("CHAT_HISTORY_MAX_MESSAGES", 40, minimum=1)
CHAT_READY_HISTORY_LIMIT = env_int("CHAT_READY_HISTORY_LIMIT", 200, minimum=1)
# Deltas arriving within this many ms of the last frame are joined into one frame; 0 sends each as it comes.
CHAT_DELTA_COALESCE_MS = env_float("CHAT_DELTA_COALESCE_MS", 0.0, minimum=0.0)

# Knowledge base: passage size, passages per prompt, and the offline answerer's minimum relevance
# (the engine's own score: -bm25() on SQLite FTS5, ts_rank() on PostgreSQL; see docs/knowledge-base.md).
KB_PASSAGE_CHARS = env_int("KB_PASSAGE_CHARS", 1200, minimum=200)
KB_PROMPT_PASSAGES = env_int("KB_PROMPT_PASSAGES", 4, minimum=1)
KB_MIN_SCORE_SQLITE = env_float("KB_MIN_SCORE_SQLITE", 5.0, minimum=0)
KB_MIN_SCORE_POSTGRESQL = env_float("KB_MIN_SCORE_POSTGRESQL", 0.05, minimum=0)

# Provider HTTP behaviour (per-site values override these where a site sets them).
PROVIDER_CONNECT_TIMEOUT = env_float("PROVIDER_CONNECT_TIMEOUT", 5.0, minimum=0.1)
PROVIDER_FIRST_BYTE_TIMEOUT = env_float("PROVIDER_FIRST_BYTE_TIMEOUT", 30.0, minimum=0.1)
PROVIDER_IDLE_TIMEOUT = env_float("PROVIDER_IDLE_TIMEOUT", 30.0, minimum=0.1)
# Retries before the first token: calls per provider, total seconds spent waiting, and the backoff curve.
PROVIDER_MAX_ATTEMPTS = env_int("PROVIDER_MAX_ATTEMPTS", 3, minimum=1)
PROVIDER_RETRY_BUDGET_SECONDS = env_float("PROVIDER_RETRY_BUDGET_SECONDS", 20.0, minimum=0)
PROVIDER_RETRY_BASE_SECONDS = env_float("PROVIDER_RETRY_BASE_SECONDS", 0.5, minimum=0)
PROVIDER_RETRY_MAX_WAIT_SECONDS = env_float("PROVIDER_RETRY_MAX_WAIT_SECONDS", 8.0, minimum=0)

# Quotas and rate limits (per-site values are edited in the admin).
QUOTA_RESERVATION_SECONDS = env_int("QUOTA_RESERVATION_SECONDS", 900, minimum=60)
QUOTA_MIN_REPLY_TOKENS = env_int("QUOTA_MIN_REPLY_TOKENS", 32, minimum=1)
QUOTA_WARN_PERCENT = env_int("QUOTA_WARN_PERCENT", 80, minimum=1)
# Where reservations and period totals are kept: "redis" (no database query to reserve, one to settle) or
# "database" (counter rows; one process or SQLite). The usage ledger itself is always in the database.
QUOTA_LEDGER = env_str("QUOTA_LEDGER", "redis" if REDIS_URL else "database")
if QUOTA_LEDGER not in ("redis", "database"):
    raise ImproperlyConfigured(f'QUOTA_LEDGER must be "redis" or "database", got {QUOTA_LEDGER!r}')
if QUOTA_LEDGER == "redis" and not REDIS_URL:
    raise ImproperlyConfigured('QUOTA_LEDGER="redis" needs REDIS_URL')
# Only a peer in these addresses/CIDR ranges may tell us the client's IP in X-Forwarded-For.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])
try:
    TRUSTED_PROXY_NETWORKS = [ipaddress.ip_network(value, strict=False) for value in TRUSTED_PROXIES]
except ValueError as error:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES must list IP addresses or CIDR ranges: {error}") from None

# Email, for the admins' usage warnings; nothing is sent unless EMAIL_HOST is set.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
SERVER_EMAIL = DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "parley@localhost")
ADMINS = [(address, address) for address in env_list("ADMINS", [])]

# The public address of this server, used in the embed snippet that createsite prints.
PORT = env_int("PORT", 8000, minimum=1)
PUBLIC_URL = env_str("PUBLIC_URL", f"http://127.0.0.1:{PORT}").rstrip("/")

# The demo site that `make run` creates uses this key when present.
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
# (kind, key) pairs the demo site tries in order; without any it answers with the offline `kb` answerer.
DEMO_PROVIDER_KEYS = [
    ("openai", OPENAI_API_KEY),
    ("mistral", env_str("MISTRAL_API_KEY")),
    ("deepseek", env_str("DEEPSEEK_API_KEY")),
]
DEMO_SITE_KEY = "demo"

# Celery: Redis when REDIS_URL is set; otherwise a filesystem queue that needs no server (make run).
# CELERY_BROKER_URL can name another broker Celery speaks, such as RabbitMQ (amqp://user:password@host/vhost).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
# The queue tasks are sent to and workers read: deployments that share one broker each take their own.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "celery")
if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", CELERY_TASK_DEFAULT_QUEUE):
    raise ImproperlyConfigured(
        f"CELERY_QUEUE must be 1 to 200 letters, digits, '.', '_', ':' or '-', got {CELERY_TASK_DEFAULT_QUEUE!r}"
    )
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_FILESYSTEM_QUEUE_DIR = Path(env_str("CELERY_FILESYSTEM_QUEUE_DIR", str(BASE_DIR / "var" / "celery")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_FILESYSTEM_QUEUE_DIR / "queue"),
        "data_folder_out": str(CELERY_FILESYSTEM_QUEUE_DIR / "queue"),
        "control_folder": str(CELERY_FILESYSTEM_QUEUE_DIR / "control"),
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULE_FILENAME = str(CELERY_FILESYSTEM_QUEUE_DIR / "beat-schedule")
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-tickets": {"task": "backend.tickets.tasks.requeue_stale_tickets", "schedule": 60.0},
}

# Tickets and their signed webhooks (docs/webhooks.md).
TICKET_LEASE_SECONDS = env_int("TICKET_LEASE_SECONDS", 300, minimum=1)
WEBHOOK_RETRY_BASE_SECONDS = env_float("WEBHOOK_RETRY_BASE_SECONDS", 30.0, minimum=0)
WEBHOOK_CALLBACK_ATTEMPTS = env_int("WEBHOOK_CALLBACK_ATTEMPTS", 8, minimum=1)
WEBHOOK_ALLOW_PRIVATE_CALLBACKS = env_bool("WEBHOOK_ALLOW_PRIVATE_CALLBACKS", False)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# One JSON object per line in production (LOG_FORMAT=json|plain; json by default when DEBUG is off).
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "backend.ops.context.ContextFilter"},
        "redact": {"()": "backend.quotas.redaction.RedactFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(site)s %(conversation)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context", "redact"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Load balancers probe /healthz over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    # Only behind a proxy that sets X-Forwarded-Proto itself (docs/deploy.md).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

# Seconds each /healthz probe (and the channel-layer check before a reply) may take.
HEALTH_CHECK_TIMEOUT = env_float("HEALTH_CHECK_TIMEOUT", 2.0, minimum=0.1)
