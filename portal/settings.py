"""Settings for the alliance portal, read from the environment.

With no environment at all the portal runs on its embedded default: SQLite and a file-system
Celery broker under ``var/``, and a secret key generated once into ``var/secret_key``. Production
sets ``DATABASE_URL`` (PostgreSQL), ``CELERY_BROKER_URL`` (Redis), ``SECRET_KEY``,
``ALLOWED_HOSTS``, ``DEBUG=0`` and ``PORTAL_HTTPS=1`` (see README.md).
"""

import secrets
import sys
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

VAR_DIR = Path(env.str("PORTAL_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _embedded_secret_key() -> str:
    """The embedded default's secret key: generated once into var/, then reused."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
        print(
            f"Generated a new SECRET_KEY into {path} (set SECRET_KEY to use your own).",
            file=sys.stderr,
        )
    return path.read_text().strip()


# Production is "behind TLS" (PORTAL_HTTPS=1), the same notion as portal.common.keys: there a
# missing secret is a configuration error, never a key generated on the spot.
PORTAL_HTTPS = env.bool("PORTAL_HTTPS", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if PORTAL_HTTPS:
        raise ImproperlyConfigured(
            "SECRET_KEY is required in production (PORTAL_HTTPS=1): set it in the environment "
            "to a long random value, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    SECRET_KEY = _embedded_secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Set by .ci/run: a test that needs PostgreSQL, Redis, a worker or a browser fails, not skips.
REQUIRE_SERVICES = env.bool("REQUIRE_SERVICES", default=False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "axes",
    "portal.common",
    "alliance",
    "projects",
]

MIDDLEWARE = [
    # First: a NUL byte in the path, query or form answers 400 before anything reads it.
    "portal.common.middleware.RejectNulBytesMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lockout flagged during authentication into its page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "alliance.context_processors.membership",
                "projects.context_processors.inbox",
            ],
        },
    },
]

WSGI_APPLICATION = "portal.wsgi.application"

# --- Database -----------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A web server and a worker write at once: WAL plus immediate transactions keep writers
    # from meeting "database is locked", and serialise audit appends.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "timeout": 20,
    }
    # Tests run real workers in threads and processes beside the test itself: an in-memory
    # database's shared cache locks whole tables and ignores the timeout, so use a file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-portal.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Authentication and object permissions ------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out user or address before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    # Django's model backend, reading a session's person with their membership (one query).
    "portal.common.auth.PortalBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: anonymous visitors hold no object permissions
GUARDIAN_RAISE_403 = False
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "home"
PASSWORD_RESET_TIMEOUT = env.int("INVITATION_TIMEOUT_SECONDS", default=7 * 24 * 3600)

# --- Login throttling (django-axes, portal.common.throttle) ---------------------------------
# Failed logins on the login form, the admin's login and POST /api/v1/auth/token/ count against
# the username and against the client's address; either reaching its limit refuses further
# attempts (even with the right password) until LOGIN_LOCKOUT_MINUTES pass without a failure,
# or staff unlock it in the console. The per-user limit is low: a person mistypes a few times,
# a guesser needs thousands of tries. The per-address limit is higher because a hospital's
# people may all reach the portal from one address; it stops one client from spraying
# guesses across many usernames.
LOGIN_FAILURES_PER_USER = env.int("LOGIN_FAILURES_PER_USER", default=10)
LOGIN_FAILURES_PER_ADDRESS = env.int("LOGIN_FAILURES_PER_ADDRESS", default=50)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)
# Proxies in front of the portal that append to X-Forwarded-For (0: clients connect directly
# and REMOTE_ADDR is their address). Never trust the header further than that.
PORTAL_PROXY_COUNT = env.int("PORTAL_PROXY_COUNT", default=0)
AXES_HANDLER = "portal.common.throttle.LoginThrottleHandler"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_FAILURE_LIMIT = LOGIN_FAILURES_PER_USER
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_CALLABLE = "portal.common.throttle.lockout_response"
AXES_CLIENT_IP_CALLABLE = "portal.common.throttle.client_address"
AXES_RESET_ON_SUCCESS = False  # a success by one account must not clear an address's count
AXES_ENABLE_ADMIN = False  # the console's own page unlocks, through an audited service
AXES_VERBOSE = False

# --- Internationalisation -----------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hant", _("Traditional Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Asia/Taipei"
USE_I18N = True
USE_TZ = True

# --- Static files (vendored, served by WhiteNoise; no CDN) --------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
WHITENOISE_USE_FINDERS = True  # serve straight from static/ without collectstatic
MEDIA_ROOT = VAR_DIR / "media"

# --- Email --------------------------------------------------------------------------------
# The embedded default (no EMAIL_BACKEND, not behind TLS) keeps every email in a demo mailbox
# under var/ that staff read in the portal (portal.common.mailbox); production sends for real.
DEMO_MAILBOX = not env.str("EMAIL_BACKEND", default="") and not env.bool(
    "PORTAL_HTTPS", default=False
)
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="") or (
    "portal.common.mailbox.DemoMailboxBackend"
    if DEMO_MAILBOX
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="alliance-portal@localhost")
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://127.0.0.1:8000")

# --- Notifications and webhooks (alliance.services.notices, alliance.services.webhooks) ---
# A decision waiting this many days gets its approver a reminder email, at most one a day.
APPROVAL_REMINDER_DAYS = env.int("APPROVAL_REMINDER_DAYS", default=3)
# A webhook delivery: each attempt's timeout, the attempts in all, and the wait before the
# next attempt (doubling from the base, capped).
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=30.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=3600.0)

# --- Federated training -------------------------------------------------------------------
# The longest round deadline a run may ask for (a site's tasks may train that long).
FEDERATION_MAX_ROUND_DEADLINE = env.int("FEDERATION_MAX_ROUND_DEADLINE", default=1800)
# The coordinator's reconciler (projects.services.runs.reconcile): how often it compares the
# database with what should be happening (closing rounds at their deadline, advancing runs),
# and how long an unanswered site waits before its task is sent again (doubling each time).
FEDERATION_RECONCILE_SECONDS = env.float("FEDERATION_RECONCILE_SECONDS", default=1.0)
FEDERATION_RESEND_SECONDS = env.float("FEDERATION_RESEND_SECONDS", default=15.0)
# An update larger than this is refused before it is decoded (the demo models are kilobytes).
FEDERATION_MAX_UPDATE_BYTES = env.int("FEDERATION_MAX_UPDATE_BYTES", default=1_000_000)
# The largest L2 distance an update may move the global model; a farther one is rejected.
FEDERATION_MAX_UPDATE_NORM = env.float("FEDERATION_MAX_UPDATE_NORM", default=1000.0)
# Where a site worker finds its data: SITE_DATA_ROOT/<institution slug>/<site key>, unless
# SITE_DATA_DIRS ("slug=/path,slug2=/path2") names a folder for that institution.
SITE_DATA_ROOT = Path(env.str("SITE_DATA_ROOT", default=str(VAR_DIR / "sites")))
SITE_DATA_DIRS = {
    slug.strip(): Path(path.strip())
    for slug, _sep, path in (
        item.partition("=") for item in env.list("SITE_DATA_DIRS", default=[]) if "=" in item
    )
}

# --- Celery -------------------------------------------------------------------------------
BROKER_FOLDER = Path(env.str("BROKER_FOLDER", default=str(VAR_DIR / "broker")))
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_FOLDER / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_FOLDER / "queue"),
        "data_folder_out": str(BROKER_FOLDER / "queue"),
        "processed_folder": str(BROKER_FOLDER / "processed"),
        # The exchange tables; kombu's default is ./control, i.e. wherever the process started.
        "control_folder": str(BROKER_FOLDER / "control"),
        "store_processed": False,
        # Each idle worker lists its queue folder this often: cheap, and hops stay short.
        "polling_interval": 0.02,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # How long a task taken by a worker that dies stays invisible before it is delivered
        # again. The coordinator's tasks take milliseconds and no task waits on a countdown
        # (the reconciler reads deadlines from the database), so an answer held by a killed
        # coordinator comes back within ~35 s (this, plus a restore sweep). A site worker's
        # task may train up to the longest round deadline: its own keys get a longer timeout
        # below, so a task it is still training is not delivered twice.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=30),
        # Sweep for such lost tasks every few seconds rather than kombu's default of ~100 s.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
    }
# A member's site worker (run_site_worker) keeps to keys of its own, so that a Redis user can be
# confined to them (manage.py broker_acl): one priority level, so its queue is the one list
# `site.<slug>`, and its own bookkeeping of unacknowledged tasks.
SITE_WORKER_INSTITUTION = env.str("SITE_WORKER_INSTITUTION", default="")
if SITE_WORKER_INSTITUTION and not CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        {
            "visibility_timeout": env.int(
                "CELERY_VISIBILITY_TIMEOUT", default=FEDERATION_MAX_ROUND_DEADLINE + 120
            ),
            "priority_steps": [0],
            "unacked_key": f"unacked.site.{SITE_WORKER_INSTITUTION}",
            "unacked_index_key": f"unacked_index.site.{SITE_WORKER_INSTITUTION}",
            "unacked_mutex_key": f"unacked_mutex.site.{SITE_WORKER_INSTITUTION}",
        }
    )
CELERY_WORKER_ENABLE_REMOTE_CONTROL = not SITE_WORKER_INSTITUTION
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "coordinator"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
# Site workers run the site task only; it lives outside the autodiscovered tasks modules.
CELERY_IMPORTS = ["projects.site_tasks"]
# Celery's Django fixup closes the database connection around every task unless this is set,
# so each coordinator task would open a new PostgreSQL connection (several milliseconds, most
# of an answer's cost). Connections are kept; portal.celery checks their age and health before
# each task as Django does before each request (CONN_MAX_AGE, CONN_HEALTH_CHECKS).
CELERY_DB_REUSE_MAX = 1_000_000
# Celery beat (run inside the coordinator's worker, ``--beat``): the approvers' reminders are
# looked at every hour (each person gets one a day at most, whatever the schedule), and webhook
# deliveries whose task was lost are sent again every minute.
CELERY_BEAT_SCHEDULE = {
    "approval-reminders": {
        "task": "projects.approval_reminders_task",
        "schedule": env.float("APPROVAL_REMINDER_CHECK_SECONDS", default=3600.0),
    },
    "webhook-deliveries-resume": {
        "task": "alliance.tasks.webhooks_resume_task",
        "schedule": 60.0,
    },
}

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.common.auth.PortalTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every list is paged; the long ones by cursor, all with a page-size ceiling.
    "DEFAULT_PAGINATION_CLASS": "portal.common.pagination.PagePagination",
    "EXCEPTION_HANDLER": "portal.common.api.exception_handler",
    # The usual parsers, plus: a NUL character anywhere, or JSON nested deeper than
    # MAX_JSON_DEPTH, is a 400 before any view sees the data (portal.common.parsers).
    "DEFAULT_PARSER_CLASSES": [
        "portal.common.parsers.JSONParser",
        "portal.common.parsers.FormParser",
        "portal.common.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Alliance portal API",
    "DESCRIPTION": (
        "Everything a member can do in the browser portal. Authenticate with a token from "
        "POST /api/v1/auth/token/ and send it as `Authorization: Token <key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # A worked example body for every operation that takes one (portal/api_examples.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "portal.api_examples.add_request_examples",
    ],
    "ENUM_NAME_OVERRIDES": {
        "InstitutionStatusEnum": "alliance.models.institution.Institution.Status",
        "ApplicationStatusEnum": "alliance.models.application.MembershipApplication.Status",
        "NoticeEventEnum": "alliance.models.notice.Event",
    },
}

# --- Security (production: DEBUG=0 and PORTAL_HTTPS=1 behind TLS) -------------------------
SECURE_SSL_REDIRECT = PORTAL_HTTPS
SESSION_COOKIE_SECURE = PORTAL_HTTPS
CSRF_COOKIE_SECURE = PORTAL_HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if PORTAL_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PORTAL_HTTPS
SECURE_HSTS_PRELOAD = PORTAL_HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PORTAL_HTTPS else None
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The deepest JSON body the API accepts: the portal's own bodies nest four levels at most (a
# dataset description's columns); the limit leaves room and refuses a parser bomb.
MAX_JSON_DEPTH = env.int("MAX_JSON_DEPTH", default=32)

# Content-Security-Policy (django-csp): everything from the portal itself, no inline script and
# no inline style anywhere (scripts and styles are static files), no plugins, no framing. The
# one exception is a style element that Django's own admin writes on change lists without
# actions (the width of the first column); it is allowed by its hash alone, which a test
# checks against the installed Django. Images may be data: URIs (the API docs' icons).
ADMIN_CHANGELIST_STYLE_HASH = "'sha256-blvLUW3UscWqsXGByNOqdBboM+ShWAuugp2mC/wbafU='"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, ADMIN_CHANGELIST_STYLE_HASH],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- The portal's Ed25519 keys (portal.common.keys): base64 seeds; generated into var/ on the
# embedded default, required behind TLS. One signs the tasks sent to sites, one the audit log's
# checkpoints.
PORTAL_SIGNING_KEY = env.str("PORTAL_SIGNING_KEY", default="")
AUDIT_LOG_KEY = env.str("AUDIT_LOG_KEY", default="")
# The audit log's signed checkpoints: the log's name in each checkpoint (and the signing key's
# name), and the file every checkpoint is appended to, one JSON object a line.
AUDIT_LOG_ORIGIN = env.str("AUDIT_LOG_ORIGIN", default="alliance-portal/audit-log")
AUDIT_CHECKPOINT_LOG = Path(
    env.str("AUDIT_CHECKPOINT_LOG", default=str(VAR_DIR / "audit-checkpoints.log"))
)

# --- A member site's worker (projects.site) -------------------------------------------------
# The portal's public key (base64), the only key whose tasks a site worker obeys.
PORTAL_PUBLIC_KEY = env.str("PORTAL_PUBLIC_KEY", default="")
# A site's private key file, when not <data folder>/.site/<slug>.key ("slug=/path,...").
SITE_KEY_FILES = {
    slug.strip(): Path(path.strip())
    for slug, _sep, path in (
        item.partition("=") for item in env.list("SITE_KEY_FILES", default=[]) if "=" in item
    )
}
SITE_HEARTBEAT_SECONDS = env.float("SITE_HEARTBEAT_SECONDS", default=30.0)
# A contributor not heard from for this long is named when a run is launched.
SITE_STALE_SECONDS = env.int("SITE_STALE_SECONDS", default=120)
