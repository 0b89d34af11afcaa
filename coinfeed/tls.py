"""One trust store for every TLS client of coinfeed, and connection errors that say why.

The WebSocket transports and the REST client verify servers with the same
:class:`ssl.SSLContext`, from :func:`client_context`: the operating system's store as OpenSSL
finds it (``/etc/ssl/certs`` on Debian, so a root added with ``update-ca-certificates`` counts;
``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` override it), plus the PEM file of the ``ca_file``
setting when given. Before this, REST used certifi's bundle and the WebSocket the OS store, so a
corporate root let one connect and not the other.

:func:`describe_error` turns what a failed connect raised (trio wraps TLS errors in
``BrokenResourceError``, httpx in ``ConnectError``) into one line naming the cause: the
certificate problem, a server that does not speak TLS, a host name that did not resolve.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

MAX_CAUSES: Final = 8
"""How far down a chain of ``__cause__``/``__context__`` the cause is looked for."""


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the OS store (honouring ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR``), plus the CA certificates in ``ca_file``. Raises OSError or ssl.SSLError
    when ``ca_file`` cannot be read as PEM."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


def describe_error(exc: BaseException, host: str | None = None) -> str:
    """One line saying why a connection failed, e.g. ``certificate verify failed: self-signed
    certificate`` or ``cannot resolve host 'ws.example': Name or service not known``."""
    group = exc.__cause__
    if isinstance(exc, OSError) and isinstance(group, BaseExceptionGroup):
        # trio's "all attempts to connect to HOST:PORT failed" is raised from a group of
        # what each address met: say both.
        reasons = dict.fromkeys(describe_error(inner, host) for inner in group.exceptions)
        return f"{exc}: {'; '.join(reasons)}"
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or cause.reason or str(cause)
            return f"certificate verify failed: {detail}"
        if isinstance(cause, ssl.SSLError):
            reason = (cause.reason or str(cause)).replace("_", " ").lower()
            if reason in ("wrong version number", "record layer failure", "http request"):
                return f"TLS handshake failed: {reason} (is the server speaking TLS on this port?)"
            return f"TLS handshake failed: {reason}"
        if isinstance(cause, socket.gaierror):
            where = f" {host!r}" if host else ""
            return f"cannot resolve host{where}: {cause.strerror or cause}"
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    for cause in _causes(exc):
        text = str(cause)
        if text:
            return f"{type(cause).__name__}: {text}"
    return type(exc).__name__


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < MAX_CAUSES:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
