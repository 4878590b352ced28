"""One settings module, driven by environment variables.

The defaults run on one machine with no outside services: SQLite for the
database and Kombu's filesystem transport for the Celery broker. Set
DATABASE_URL and REDIS_URL to run the same code on PostgreSQL and Redis.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    return os.getenv(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: str) -> int:
    return int(os.getenv(name, default))


def envfloat(name: str, default: str) -> float:
    return float(os.getenv(name, default))


def envpath(name: str, default: Path) -> Path:
    value = os.getenv(name)
    return Path(value).resolve() if value else default


VAR_DIR = envpath("PORTAL_VAR_DIR", BASE_DIR / "var")
# Only this user reads what the portal writes: its folders 0700, its files 0600 (media, the SQLite file, the
# broker's messages). A folder that exists already keeps its mode.
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)

SECRET_KEY = os.getenv("SECRET_KEY", "dev-only-insecure-key-change-me")
DEBUG = envbool("DEBUG", "false")
ALLOWED_HOSTS = [h for h in os.getenv("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "portal.apps.PortalConfig",
    "matching",
    "reviews",
]

MIDDLEWARE = [
    # First: refuses an over-large body before anything reads it.
    "portal.middleware.RequestSizeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise, which answers static files itself: everything else is `private, no-store`.
    "portal.middleware.NoStoreMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "portal.twofactor.TwoFactorMiddleware",
    # The permission matrix (portal.access.ROUTE_ROLES), for every routed request.
    "portal.middleware.RouteAccessMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Inside MessageMiddleware: what a service said beside a change becomes a message (portal.notices).
    "portal.middleware.NoticesMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lockout raised during login into its response.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Usernames in any case (portal.authentication).
    "portal.authentication.CaseInsensitiveModelBackend",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
                "portal.context_processors.membership",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", "0"),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that a worker process started by a test sees the
    # rows the test committed.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    # Take the write lock when a transaction starts, so that a web process and a worker writing at once wait
    # for each other instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = os.getenv("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

# Photos, crops and uploads live here and are never served as static files:
# every read goes through a view that checks the user's organisation.
MEDIA_ROOT = envpath("MEDIA_ROOT", VAR_DIR / "media")
# Media on S3-compatible storage (AWS, MinIO, Ceph...) when a bucket is named,
# so that web and worker machines share it; django-storages reads its AWS_*
# settings (AWS_S3_ENDPOINT_URL, AWS_S3_REGION_NAME, credentials) from the
# environment. Only the backend's dotted path is named here: boto3 is imported
# when a file is first stored, never by a process that does not use S3.
AWS_STORAGE_BUCKET_NAME = os.getenv("AWS_STORAGE_BUCKET_NAME", "")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            # Never public: every read goes through a view that checks access.
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": False,
            **({"endpoint_url": os.environ["AWS_S3_ENDPOINT_URL"]} if os.getenv("AWS_S3_ENDPOINT_URL") else {}),
            **({"region_name": os.environ["AWS_S3_REGION_NAME"]} if os.getenv("AWS_S3_REGION_NAME") else {}),
        },
    }
# No URL pattern serves this prefix; it is set only because Django's test
# live server insists on a string here.
MEDIA_URL = "/private-media-is-never-served/"

LOGIN_URL = "login"
# "home" sends each role to its own start page; a reviewer has no case list.
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

EMAIL_BACKEND = os.getenv("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# For django.core.mail.backends.filebased.EmailBackend: each connection's messages go to a file in this folder.
if os.getenv("EMAIL_FILE_PATH"):
    EMAIL_FILE_PATH = os.getenv("EMAIL_FILE_PATH")
EMAIL_HOST = os.getenv("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", "25")
EMAIL_HOST_USER = os.getenv("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.getenv("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "false")
# A mail task waits at most this long on SMTP, then retries later (portal.mail).
EMAIL_TIMEOUT = envfloat("EMAIL_TIMEOUT", "10")
MAIL_RETRY_BASE_SECONDS = envfloat("MAIL_RETRY_BASE_SECONDS", "30")
MAIL_RETRY_MAX_SECONDS = envfloat("MAIL_RETRY_MAX_SECONDS", "1800")
# With the defaults, about 24 hours of retries before a mail is given up (and logged).
MAIL_MAX_RETRIES = envint("MAIL_MAX_RETRIES", "60")

# Uploads
UPLOAD_MAX_BYTES = envint("UPLOAD_MAX_BYTES", str(20 * 1024 * 1024))
UPLOAD_MAX_PIXELS = envint("UPLOAD_MAX_PIXELS", str(50_000_000))
UPLOAD_MAX_FILES = envint("UPLOAD_MAX_FILES", "20")
BULK_MAX_BYTES = envint("BULK_MAX_BYTES", str(200 * 1024 * 1024))
BULK_MAX_MEMBERS = envint("BULK_MAX_MEMBERS", "5000")
# The whole request body: room for the largest bulk zip or a case's full set of photos, plus its fields.
REQUEST_MAX_BYTES = envint(
    "REQUEST_MAX_BYTES", str(max(BULK_MAX_BYTES, UPLOAD_MAX_FILES * UPLOAD_MAX_BYTES) + 5 * 1024 * 1024)
)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Photos, crops, originals, bulk archives and disclosures are biometric data: readable by the portal's user only.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# Face engine
FACE_DETECTION_MODEL = os.getenv("FACE_DETECTION_MODEL", "hog")
FACE_UPSAMPLE = envint("FACE_UPSAMPLE", "1")
# Photos are downscaled to this longest side before detection; 0 keeps full size.
FACE_MAX_SIDE = envint("FACE_MAX_SIDE", "1024")
FACE_CROP_MARGIN = envfloat("FACE_CROP_MARGIN", "0.25")

# Real face photos for tests and audits (never committed to the project).
FACES_DIR = envpath("FACES_DIR", (BASE_DIR.parent / "shared" / "faces").resolve())

# Celery
REDIS_URL = os.getenv("REDIS_URL", "")
# The cache holds the API throttle counters. On Redis they are shared by every web process and machine;
# without it each process counts alone, which is right only for the single-process default set-up.
CACHE_URL = os.getenv("CACHE_URL", REDIS_URL)
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "portal",
            # Short: a throttle check must not hold a request up while Redis is away.
            "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_queue_dir / _sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than the longest hard time limit (6600 s, an audit import), so
        # that a slow task is not handed to a second worker while the first
        # still runs it. A task lost with its worker comes back after this at
        # the latest; the stale-photo sweeper below brings photos back sooner.
        "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", "7200"),
        # A publish while the broker is down (refusing, unreachable or frozen)
        # must fail within about two seconds, not hang the request: the outbox
        # sends the task later. Above kombu's 1 s BRPOP timeout, for workers.
        "socket_connect_timeout": envfloat("CELERY_BROKER_CONNECT_TIMEOUT", "1"),
        "socket_timeout": envfloat("CELERY_BROKER_SOCKET_TIMEOUT", "2"),
    }
# Without these, kombu retries a dropped publishing connection with a 2 s sleep
# (interval_start) before giving up; one immediate retry covers a stale pooled
# connection after a broker restart. Workers reconnect with their own policy.
CELERY_BROKER_TRANSPORT_OPTIONS.update({"max_retries": 1, "interval_start": 0, "interval_step": 0.2})
CELERY_BROKER_CONNECTION_TIMEOUT = envfloat("CELERY_BROKER_CONNECT_TIMEOUT", "1")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", "300")
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", "360")
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", "false")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Housekeeping has its own queue, so that a backlog of photos cannot delay the
# sweepers that recover lost work. Workers consume both unless given -Q.
CELERY_TASK_DEFAULT_QUEUE = "celery"
# Shards of a large gallery go to "search", so that search capacity can be
# added with workers that take only that queue (`-Q search`).
CELERY_TASK_QUEUES = {"celery": {}, "maintenance": {}, "search": {}}
CELERY_TASK_ROUTES = {
    "portal.tasks.*": {"queue": "maintenance"},
    "matching.tasks.requeue_stale_photos": {"queue": "maintenance"},
    "matching.tasks.search_shard": {"queue": "search"},
}
# Only the shard tasks of a sharded search store results (every task ignores
# its result unless it says otherwise): the chord's callback reads them here.
# Redis counts the chord's parts itself; other backends poll (celery.chord_unlock).
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    _result_backend_default = CELERY_BROKER_URL
else:
    (VAR_DIR / "results").mkdir(mode=0o700, parents=True, exist_ok=True)
    _result_backend_default = f"file://{VAR_DIR / 'results'}"
CELERY_RESULT_BACKEND = os.getenv("CELERY_RESULT_BACKEND", _result_backend_default)
CELERY_RESULT_EXPIRES = envint("CELERY_RESULT_EXPIRES", "3600")

# Search. A worker holds at most this many gallery faces in memory (int8 codes,
# 144 bytes each, so 2 000 000 faces is about 275 MB; its first search decrypts
# them all, about a minute). A larger gallery is searched in shards of whole
# subjects, one task each on the "search" queue.
SEARCH_SHARD_MAX_FACES = envint("SEARCH_SHARD_MAX_FACES", "2000000")
# BLAS threads per worker process, and threads of one gallery scan; 0: one per core.
SEARCH_BLAS_THREADS = envint("SEARCH_BLAS_THREADS", "1")
OUTBOX_FLUSH_SECONDS = envfloat("OUTBOX_FLUSH_SECONDS", "10")
PHOTO_SWEEP_SECONDS = envfloat("PHOTO_SWEEP_SECONDS", "60")
WORKER_HEARTBEAT_SECONDS = envfloat("WORKER_HEARTBEAT_SECONDS", "30")
# One beat only (`celery worker -B` on one machine, or one `celery beat`); the
# sweeps are safe to overlap but a second beat only doubles the work. They do
# not expire: a sweep waits for a free pool process, and on busy workers every
# one would expire unrun. Late or redundant sweeps cost a few queries each.
CELERY_BEAT_SCHEDULE = {
    "outbox-flush": {"task": "portal.tasks.outbox_flush", "schedule": OUTBOX_FLUSH_SECONDS},
    "photos-requeue-stale": {"task": "matching.tasks.requeue_stale_photos", "schedule": PHOTO_SWEEP_SECONDS},
}
# The review queue reads stored warning severities; this sweep catches new candidates and audit runs (a
# decision queues its own refresh). Cheap when nothing changed: each organisation costs three queries.
WARNINGS_SWEEP_SECONDS = envfloat("WARNINGS_SWEEP_SECONDS", "30")
CELERY_BEAT_SCHEDULE["warnings-refresh"] = {
    "task": "reviews.tasks.refresh_all_warnings",
    "schedule": WARNINGS_SWEEP_SECONDS,
    "options": {"expires": WARNINGS_SWEEP_SECONDS},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# A photo in a working state this long belongs to a lost worker; longer than
# process_photo's hard time limit (300 s), so a slow photo is never taken twice.
PHOTO_STALE_AFTER_SECONDS = envint("PHOTO_STALE_AFTER_SECONDS", "900")
# A queued photo this old, with its queue empty, lost its task message.
PHOTO_QUEUED_RESEND_SECONDS = envint("PHOTO_QUEUED_RESEND_SECONDS", "600")
# Claims per photo, after which a photo that keeps failing or killing its worker ends failed.
PHOTO_MAX_ATTEMPTS = envint("PHOTO_MAX_ATTEMPTS", "3")

REST_FRAMEWORK = {
    # API keys and personal tokens first, so that a request without credentials gets 401 with a
    # WWW-Authenticate header. No Basic authentication: a password sent with every call would
    # bypass the login page's protections.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.keys.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "portal.pagination.BoundedPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "portal.api.PortalAutoSchema",
    "EXCEPTION_HANDLER": "portal.api.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "portal.throttles.AnonRateThrottle",
        "portal.throttles.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.getenv("API_THROTTLE_ANON", "60/min"),
        "user": os.getenv("API_THROTTLE_USER", "1200/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Face search portal API",
    "DESCRIPTION": "Cases, probe photos and confirmed matches for caseworkers; galleries and subjects for "
    "organisation admins; bias audit results for reviewers. A match is an investigative lead only.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # File fields become `format: binary` in request bodies only when requests have their own components.
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/",
    # Served from static/, never from a CDN, so that the docs work air-gapped.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "PhotoStatusEnum": "matching.models.PhotoStatus",
        "BatchStatusEnum": "matching.models.BatchStatus",
        "SexEnum": "matching.models.Sex",
        "AgeBandEnum": "matching.models.AgeBand",
        "EthnicityEnum": "matching.models.Ethnicity",
    },
}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
CSRF_FAILURE_VIEW = "portal.api.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
}

# Bias audits
AUDIT_MIN_IDENTITIES = envint("AUDIT_MIN_IDENTITIES", "20")
AUDIT_MIN_EFFECTIVE_PAIRS = envint("AUDIT_MIN_EFFECTIVE_PAIRS", "30")
# A 1:N figure (the share of strangers' searches returning a candidate) resting on fewer strangers' worth of
# evidence than this reads "not measured".
AUDIT_MIN_EFFECTIVE_SEARCHES = envint("AUDIT_MIN_EFFECTIVE_SEARCHES", "10")
AUDIT_THRESHOLDS = [
    float(t) for t in os.getenv("AUDIT_THRESHOLDS", "0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7").split(",")
]

PORTAL_BASE_URL = os.getenv("PORTAL_BASE_URL", "http://127.0.0.1:8000")
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "portal@localhost")

# Biometric data
FACE_ENCODING_KEYS = [k for k in os.getenv("FACE_ENCODING_KEYS", "").split(",") if k.strip()]
RETENTION_SWEEP_SECONDS = envfloat("RETENTION_SWEEP_SECONDS", "3600")
CELERY_BEAT_SCHEDULE["cases-purge-expired"] = {
    "task": "matching.tasks.purge_expired_cases",
    "schedule": RETENTION_SWEEP_SECONDS,
    "options": {"expires": RETENTION_SWEEP_SECONDS},
}

# The activity log: HMAC keys outside the database (comma-separated, newest first; locally a key is derived
# from SECRET_KEY), and signed checkpoints of every chain's head where the database cannot rewrite them.
AUDIT_LOG_KEYS = [k for k in os.getenv("AUDIT_LOG_KEYS", "").split(",") if k.strip()]
AUDIT_CHECKPOINT_DIR = envpath("AUDIT_CHECKPOINT_DIR", VAR_DIR / "audit-checkpoints")
AUDIT_CHECKPOINT_BUCKET = os.getenv("AUDIT_CHECKPOINT_BUCKET", AWS_STORAGE_BUCKET_NAME)
AUDIT_SEAL_SECONDS = envfloat("AUDIT_SEAL_SECONDS", "60")
AUDIT_CHECKPOINT_SECONDS = envfloat("AUDIT_CHECKPOINT_SECONDS", "900")
if AUDIT_CHECKPOINT_BUCKET:
    STORAGES["audit_checkpoints"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AUDIT_CHECKPOINT_BUCKET,
            "location": "audit-checkpoints",
            "default_acl": "private",
            "file_overwrite": False,
            **({"endpoint_url": os.environ["AWS_S3_ENDPOINT_URL"]} if os.getenv("AWS_S3_ENDPOINT_URL") else {}),
            **({"region_name": os.environ["AWS_S3_REGION_NAME"]} if os.getenv("AWS_S3_REGION_NAME") else {}),
        },
    }
else:
    STORAGES["audit_checkpoints"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(AUDIT_CHECKPOINT_DIR), "file_permissions_mode": 0o600,
                    "directory_permissions_mode": 0o700},
    }  # fmt: skip
CELERY_BEAT_SCHEDULE["audit-views-seal"] = {
    "task": "portal.tasks.audit_views_seal",
    "schedule": AUDIT_SEAL_SECONDS,
    "options": {"expires": AUDIT_SEAL_SECONDS},
}
CELERY_BEAT_SCHEDULE["audit-checkpoint-export"] = {
    "task": "portal.tasks.audit_checkpoint_export",
    "schedule": AUDIT_CHECKPOINT_SECONDS,
}

# Logins: lockout after repeated failures (django-axes) and TOTP for roles that see identities.
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", "5")
AXES_COOLOFF_TIME = envfloat("AXES_COOLOFF_HOURS", "1")
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Failures count against the lowercased name: the backend signs in whatever the case typed.
AXES_USERNAME_CALLABLE = "portal.authentication.axes_username"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "portal/locked_out.html"
REQUIRE_TWO_FACTOR = envbool("REQUIRE_TWO_FACTOR", "true")
OTP_TOTP_ISSUER = os.getenv("OTP_TOTP_ISSUER", "Face search portal")

# Content Security Policy: everything from this origin, nothing inline but styles the admin needs.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}

# Production: DEPLOYMENT=production turns on everything `manage.py check --deploy` asks for.
DEPLOYMENT = os.getenv("DEPLOYMENT", "local")
if DEPLOYMENT == "production":
    from django.core.exceptions import ImproperlyConfigured

    if SECRET_KEY.startswith("dev-only") or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("Set SECRET_KEY to a long random value for production.")
    if not FACE_ENCODING_KEYS:
        raise ImproperlyConfigured("Set FACE_ENCODING_KEYS (Fernet keys) for production.")
    if not AUDIT_LOG_KEYS or any(len(k.strip()) < 32 for k in AUDIT_LOG_KEYS):
        raise ImproperlyConfigured("Set AUDIT_LOG_KEYS (random secrets of 32 characters or more) for production.")
    DEBUG = False
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "true")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", str(8 * 3600))
# Messages can carry a new API key's secret once; keep them server-side rather than in a signed cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
