"""How to reach the schema registry: URL without credentials, basic auth, CA, client certificate.

Credentials used to be accepted only as `user:pass@` in SCHEMA_REGISTRY_URL, which then showed in
every place that printed the URL. They now come from their own settings (the password from a
Secret or a mounted file); a URL that still holds them keeps working, its credentials moved into
the basic-auth pair so the URL given to the HTTP client (and quoted in its errors) holds none.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from consumer.config.settings import Settings
from consumer.errors import ConfigError


@dataclass(frozen=True)
class RegistryConnection:
    """Keyword arguments for an httpx client of the registry (`httpx.Client(**c.client_options())`)."""

    url: str  # without user info: safe to print
    auth: tuple[str, str] | None = field(default=None, repr=False)
    verify: ssl.SSLContext | bool = True  # an SSL context holds the CA and the client certificate

    def client_options(self) -> dict[str, object]:
        options: dict[str, object] = {"base_url": self.url, "verify": self.verify}
        if self.auth is not None:
            options["auth"] = self.auth
        return options


def registry_connection(settings: Settings) -> RegistryConnection | None:
    """The registry's connection from the settings, or None without SCHEMA_REGISTRY_URL; ConfigError
    when a CA or certificate file cannot be loaded (named, with what to do)."""
    if not settings.schema_registry_url:
        return None
    parts = urlsplit(settings.schema_registry_url)
    host = parts.netloc.rpartition("@")[2]
    url = urlunsplit(parts._replace(netloc=host))
    auth = None
    if settings.schema_registry_user:
        auth = (settings.schema_registry_user, settings.registry_password() or "")
    elif parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    if settings.schema_registry_key_file is not None and settings.schema_registry_cert_file is None:
        raise ConfigError("SCHEMA_REGISTRY_KEY_FILE is set without SCHEMA_REGISTRY_CERT_FILE; "
                          "set the client certificate too, or remove the key")
    verify: ssl.SSLContext | bool = True
    if settings.schema_registry_ca_file is not None or settings.schema_registry_cert_file is not None:
        verify = _tls_context(settings)
    return RegistryConnection(url, auth, verify)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    # One SSL context carries both the private CA and the client certificate (httpx's own `cert`
    # argument is deprecated).
    ca_file = settings.schema_registry_ca_file
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"SCHEMA_REGISTRY_CA_FILE={ca_file}: cannot load it ({exc}); "
                          "mount the registry's CA certificate (PEM)") from exc
    cert_file, key_file = settings.schema_registry_cert_file, settings.schema_registry_key_file
    if cert_file is not None:
        try:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"SCHEMA_REGISTRY_CERT_FILE={cert_file}: cannot load the client certificate "
                              f"({exc}); mount the PEM certificate and its key (SCHEMA_REGISTRY_KEY_FILE)") from exc
    return context
