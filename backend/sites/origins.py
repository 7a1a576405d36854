"""Parse and compare the exact `scheme://host[:port]` origins a site allows."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str:
    """Return the canonical form browsers send in the Origin header, or raise ValidationError."""
    raw = (value or "").strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ValidationError(f"{raw!r} is not a valid origin (expected scheme://host[:port])") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValidationError(f"{raw!r} is not a valid origin: the scheme must be http or https")
    if not parts.hostname:
        raise ValidationError(f"{raw!r} is not a valid origin: it has no host")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValidationError(f"{raw!r} is not a valid origin: use only scheme://host[:port], with no path")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def normalize_origins(values: list[str]) -> list[str]:
    origins: list[str] = []
    for value in values:
        origin = normalize_origin(value)
        if origin not in origins:
            origins.append(origin)
    return origins
