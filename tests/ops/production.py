"""The environment of a production deployment, for tests that run the server the way operators do."""

from __future__ import annotations

import secrets

from cryptography.fernet import Fernet

from tests.processes import server_env


def production_env(database_url: str, **extra: str) -> dict[str, str]:
    return server_env(
        database_url,
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(64),
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="chat.example.com,127.0.0.1",
        SECURE_SSL_REDIRECT="true",
        SECURE_PROXY_SSL_HEADER="true",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true",
        **extra,
    )
