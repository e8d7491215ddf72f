"""One settings module, driven by environment variables (see .env.example).

With no environment set, the project runs on embedded defaults: an SQLite file, a local-memory
cache and Celery tasks executed eagerly in-process. `DATABASE_URL` switches to PostgreSQL,
`REDIS_URL` to Redis for the cache and as the Celery broker. `DJANGO_ENV=production` refuses to
start without its secrets and turns on the HTTPS settings that `check --deploy` asks for.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_bool(name: str, default: bool = False) -> bool:
    """A true or false word (1/0, true/false, yes/no, on/off, any case); anything else is an error, so a
    typo such as DEBUG=ture cannot silently mean false. Unset or empty means the default."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name}={os.environ[name]!r} is not a true or false word; use one of "
        f"{', '.join(sorted(TRUE_WORDS))} or {', '.join(sorted(FALSE_WORDS))}."
    )


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


ENVIRONMENT = env_str("DJANGO_ENV", "development")
PRODUCTION = ENVIRONMENT == "production"
TESTING = env_bool("DJANGO_TESTING")

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production")
    SECRET_KEY = "insecure-development-key-never-use-in-production-0123456789abcdef"  # noqa: S105

DEBUG = env_bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
if "127.0.0.1" not in ALLOWED_HOSTS:
    # The container's health check asks http://127.0.0.1:8000/healthz, with that address as its Host; the public
    # name reaches the server through the proxy. (A loopback Host poisons no link a user could follow.)
    ALLOWED_HOSTS.append("127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "progress_site.apps.OperatorAdminConfig",  # Django admin, for superusers only
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "csp",
    "pgtrigger",
    "pghistory",
    "django_otp",
    "axes",
    "tracking",
    "reports",
]

MIDDLEWARE = [
    # First: every line a request logs carries its id (X-Request-ID), so does every task it enqueues.
    "tracking.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "tracking.metrics_views.RequestTimingMiddleware",
    "tracking.middleware.PrivateResponseMiddleware",
    "tracking.middleware.SessionMiddlewareWithPassiveRequests",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "tracking.middleware.AuditRequestMiddleware",
    "tracking.middleware.SessionLimitMiddleware",
    "tracking.middleware.LoginRequiredMiddleware",
    "tracking.middleware.SecondFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a refused login into the locked-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "progress_site.urls"

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
                "tracking.context_processors.roles",
            ],
        },
    },
]

WSGI_APPLICATION = "progress_site.wsgi.application"
ASGI_APPLICATION = "progress_site.asgi.application"

# Database: PostgreSQL through psycopg 3 when DATABASE_URL is set, otherwise an SQLite file.
DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # Without the pool: a connection per request (0) is the only safe choice under ASGI, where a request's
        # thread is not reused; a worker without the pool may set DB_CONN_MAX_AGE=60.
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})
    # An unreachable server fails the connection attempt in seconds, not at the kernel's TCP timeout.
    DATABASES["default"]["OPTIONS"]["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 5)
    if env_bool("DB_POOL", default=True):
        # Django 5.2's psycopg pool, one per process: a request borrows a connection and gives it back when it
        # ends (so CONN_MAX_AGE must be 0). A request that waits DB_POOL_TIMEOUT seconds for one (the pool is
        # exhausted or PostgreSQL is down) fails fast and is answered 503 with Retry-After (tracking.unavailable).
        # The defaults fit the connection budget of docs/architecture.md within PostgreSQL's max_connections=100.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": env_int("DB_POOL_MIN_SIZE", 2),
            "max_size": env_int("DB_POOL_MAX_SIZE", 10),
            "timeout": float(env_str("DB_POOL_TIMEOUT", "5")),
        }
if PRODUCTION and DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded SQLite file is for the demo: a clinic's data lives in PostgreSQL.
    raise ImproperlyConfigured(
        "DATABASE_URL must point at PostgreSQL when DJANGO_ENV=production; SQLite is for the demo."
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Wait for the write lock instead of failing at once when the demo serves concurrent requests.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # SQLite builds the sessions' (patient, started_at) index without its INCLUDE column, which only
    # PostgreSQL's index-only scans use: said once here, not warned at every start of the demo.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cache and Celery broker: Redis when REDIS_URL is set; otherwise local memory and eager tasks.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's RedisCache with one client per process (progress_site/cache.py says why).
            "BACKEND": "progress_site.cache.ProcessRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "progress"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
# A task lost in a worker crash must run again: acknowledge after the task, one task at a time.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 100
# A broker outage never needs a human: the worker waits for Redis at startup and reconnects after a
# loss for as long as it takes (progress_site/celery.py keeps kombu from stopping the worker when the
# loss finds it holding unacknowledged messages; tests/test_broker_outage.py). Tasks running at the loss
# finish (they are not cancelled: an alert e-mail already sent would be sent again); their late acks
# fail, and Redis redelivers those messages after the visibility timeout.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Fail fast when the broker is down: the data is already committed and a beat task reconciles.
# visibility_timeout: a message delivered to a worker and not acknowledged in this time (the worker was
# killed, or lost its connection before the ack) is delivered again. It must exceed the longest time a
# live worker holds a message (the longest countdown, 30 s, plus the longest hard time limit of an
# acks_late task, 30 min), or a task still running would be started a second time; tests/
# test_worker_kill.py checks this. So a killed worker's tasks come back after up to an hour; the sweeps
# (reconciler, pending alerts and webhooks, each a minute) redo what matters sooner.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "visibility_timeout": 3600,
}
# A send retries once, at once (a pooled connection Redis dropped when it restarted is replaced), and
# does not sleep: Celery's default (3 retries, 0.2 s more each) kept each ingest ~0.6 s per task it
# queues waiting while Redis was down (~3 s a batch).
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}
CELERY_TIMEZONE = "UTC"
# Analytics freshness: changed patients wait in a set that one drain task recomputes in groups (a burst
# → a few group runs); the drain starts this long after the change that queued it, so under a steady
# load each patient is recomputed about once a second at most (0: at once). At most one drain is queued;
# it is sent with no countdown and waits out the rest of the window itself, so it never waits in a
# worker's timer, which a lost broker connection empties. The reconciler finds patients whose recompute
# was lost.
ANALYTICS_DEBOUNCE_SECONDS = float(env_str("ANALYTICS_DEBOUNCE_SECONDS", "1"))
ANALYTICS_RECONCILE_SECONDS = float(env_str("ANALYTICS_RECONCILE_SECONDS", "60"))
# How often beat sweeps for alert e-mails not sent yet (a lost task, Redis down at the ingest) and urgent
# alerts to escalate, and for webhook deliveries that are due.
ALERT_SWEEP_SECONDS = float(env_str("ALERT_SWEEP_SECONDS", "60"))
WEBHOOK_RETRY_SECONDS = float(env_str("WEBHOOK_RETRY_SECONDS", "60"))
ANALYTICS_CACHE_SECONDS = env_int("ANALYTICS_CACHE_SECONDS", 300)
# Expected recovery (DESIGN §8): a clinic's references are rebuilt this long after its last new
# questionnaire response (a burst → one run), and nightly.
REFERENCE_DEBOUNCE_SECONDS = float(env_str("REFERENCE_DEBOUNCE_SECONDS", "30"))
# The measures-due digest goes to each therapist at this hour of their clinic's local day.
DIGEST_HOUR = env_int("DIGEST_HOUR", 7)

# Audit log (DESIGN §7): signed chain heads are written outside the database, signed with a key that is
# not SECRET_KEY. Both are required in production; the demo keeps them beside its database.
AUDIT_HEAD_DIR = env_str("AUDIT_HEAD_DIR")
AUDIT_SIGNING_KEY = env_str("AUDIT_SIGNING_KEY")
if PRODUCTION and not (AUDIT_HEAD_DIR and AUDIT_SIGNING_KEY):
    raise ImproperlyConfigured("AUDIT_HEAD_DIR and AUDIT_SIGNING_KEY must be set when DJANGO_ENV=production")
AUDIT_HEAD_DIR = AUDIT_HEAD_DIR or str(BASE_DIR / "audit-heads")
# Encryption at rest (DESIGN §7): Fernet keys, comma-separated, newest first. Required in production;
# elsewhere one key is generated into FIELD_ENCRYPTION_KEY_FILE on first use.
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS")
if PRODUCTION and not FIELD_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must be set when DJANGO_ENV=production")
FIELD_ENCRYPTION_KEY_FILE = env_str("FIELD_ENCRYPTION_KEY_FILE", str(BASE_DIR / "field-encryption.key"))
# Break-glass (DESIGN §7): how long a therapist's emergency access to an unassigned patient lasts.
BREAK_GLASS_MINUTES = env_int("BREAK_GLASS_MINUTES", 60)

# Alerts: e-mail to the assigned therapists; urgent ones unacknowledged this long go to the clinic admins.
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000")
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", PRODUCTION)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Progress Dashboard <alerts@localhost>")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Argon2 first: a password stored under another hasher is re-hashed with Argon2 at its next login.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
if TESTING:
    # Speed: the suite creates many users. tests/test_login_hardening.py checks the Argon2 path itself.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *PASSWORD_HASHERS]

AUTHENTICATION_BACKENDS = [
    # django-axes first: a locked username + IP is refused before the password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Lockout (DESIGN §7): LOGIN_FAILURE_LIMIT failures, each within LOGIN_COOLOFF_MINUTES of the last, lock
# that username + IP (never a whole clinic's address) for LOGIN_COOLOFF_MINUTES; a success resets it.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_COOLOFF_MINUTES = env_int("LOGIN_COOLOFF_MINUTES", 15)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Attempts during a lockout do not extend it: it ends LOGIN_COOLOFF_MINUTES after it began.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "tracking.account_views.locked_out"
AXES_CLIENT_IP_CALLABLE = "tracking.audit.axes_client_ip"
# The audit log records every login; axes' own access log would be a second copy.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False

# Second factor (django-otp TOTP + backup codes). With REQUIRE_MFA, a staff user without a device reaches
# nothing but enrolment; a user with a device always gives a code after the password.
REQUIRE_MFA = env_bool("REQUIRE_MFA", default=PRODUCTION)
MFA_ISSUER = env_str("MFA_ISSUER", "Progress Dashboard")
MFA_BACKUP_CODES = 10

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "caseload"
LOGOUT_REDIRECT_URL = "login"

# Sessions end after 15 idle minutes, and SESSION_ABSOLUTE_HOURS after the login whatever the activity.
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_SECONDS", 15 * 60)
SESSION_ABSOLUTE_HOURS = env_int("SESSION_ABSOLUTE_HOURS", 12)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Outside production whitenoise serves straight from the source folders, so the demo runs with DEBUG off
# (the product's own error pages) without a collectstatic step; production serves the collected files.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# Ingest: an explicit body-size cap, answered with 413.
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", 2 * 1024 * 1024)
INGEST_MAX_ITEMS = env_int("INGEST_MAX_ITEMS", 5000)
INGEST_FUTURE_TOLERANCE_SECONDS = 5 * 60

# Metrics (DESIGN §10): GET /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset, it is a 404
# for everyone. PROMETHEUS_MULTIPROC_DIR (read by prometheus_client, see tracking/metrics_files.py) adds
# up the counters of every web and worker process.
METRICS_TOKEN = env_str("METRICS_TOKEN")
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES + 1024

REST_FRAMEWORK = {
    # DRF's default is AllowAny: deny unless a view says otherwise.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tracking.api.authentication.IngestTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["tracking.api.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tracking.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Progress tracking API",
    "DESCRIPTION": "Ingest of game activity and read access to a patient's progress and outcomes.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
}

# Content-Security-Policy: no inline scripts, no eval, nothing from another host.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],  # plotly.js injects its own styles
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }
}

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The probes and Prometheus's scrape speak plain HTTP inside the host (compose's health check calls
# 127.0.0.1:8000; Prometheus scrapes web:8000): never redirected to HTTPS. They carry no patient data.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# Logs (DESIGN §10): one JSON object per line in production (LOG_FORMAT=json: time, level, logger, message,
# request_id, user_id; task and task_id in a task; exc_type and traceback), a line of text elsewhere
# (LOG_FORMAT=text). Every line passes the request-id filter and the scrubber first (tracking/logs.py,
# tracking/request_id.py): no player id or free text. The web's master (gunicorn.conf.py), its workers, and
# Celery's worker and beat (progress_site/celery.py) all log through this configuration.
LOG_FORMAT = env_str("LOG_FORMAT", "json" if PRODUCTION else "text")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} is neither json nor text")
_SERVER_LOG = {"handlers": ["console"], "level": "INFO", "propagate": False}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "tracking.logs.ContextFilter"}, "scrub": {"()": "tracking.logs.ScrubFilter"}},
    "formatters": {"json": {"()": "tracking.logs.JsonFormatter"}, "text": {"()": "tracking.logs.TextFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context", "scrub"]}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "gunicorn.error": _SERVER_LOG,
        "uvicorn.error": _SERVER_LOG,
        # The servers' access lines hold the path and its query (a player id); RequestIdMiddleware logs each
        # request by view name instead (logger progress.requests).
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "django.server": {"handlers": [], "level": "WARNING", "propagate": False},  # runserver's (the demo's)
        # Request logs would carry query strings; the app logs ids only.
        "django.request": {"level": "ERROR"},
        # Every login is in the audit log; axes' own lines would repeat it.
        "axes": {"level": "WARNING"},
        # The PDF renderer narrates every step at INFO.
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
    },
}
