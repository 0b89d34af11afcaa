"""A throwaway PKI made with the ``openssl`` command, for TLS tests of the WebSocket and REST.

A CA the client trusts and certificates it signed (good, expired, for another name), a second CA
the client does not trust, and a self-signed certificate. ``openssl ca`` sets the expired one's
dates (``-days`` cannot be negative).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs
import pytest

from tests.servers import require_binary

NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
CA_CONFIG = """\
[ca]
default_ca = test
[test]
database = {directory}/index.txt
new_certs_dir = {directory}
serial = {directory}/serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
"""
SERVER_EXTENSIONS = """\
subjectAltName = {names}
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
"""


@attrs.frozen
class KeyPair:
    cert: Path
    key: Path


@attrs.frozen
class Pki:
    """Makes CAs and certificates with the openssl command, in ``directory``."""

    directory: Path
    openssl: str

    def run(self, *args: str | Path) -> None:
        subprocess.run([self.openssl, *map(str, args)], check=True, capture_output=True)

    def ca(self, name: str, *, common_name: str | None = None) -> KeyPair:
        pair = KeyPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        self.run(
            "req", "-x509", *NEW_KEY, "-keyout", pair.key, "-out", pair.cert, "-days", "2",
            "-subj", f"/CN={common_name or f'coinfeed test {name}'}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return pair

    def self_signed(self, name: str, *, names: str = "IP:127.0.0.1,DNS:localhost") -> KeyPair:
        pair = KeyPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        self.run(
            "req", "-x509", *NEW_KEY, "-keyout", pair.key, "-out", pair.cert, "-days", "2",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName={names}",
        )  # fmt: skip
        return pair

    @classmethod
    def in_directory(cls, directory: Path, needed_for: str) -> Pki:
        """A Pki writing into ``directory``; fails saying how to install openssl if missing."""
        return cls(directory, require_binary("openssl", package="openssl", needed_for=needed_for))

    def issue(
        self,
        ca: KeyPair,
        name: str,
        *,
        names: str = "IP:127.0.0.1, DNS:localhost",
        start: str | None = None,
        end: str | None = None,
    ) -> KeyPair:
        """A server certificate ``ca`` signed, valid from ``start`` to ``end``
        (``YYYYMMDDHHMMSSZ``; by default from now for two days)."""
        pair = KeyPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        request, extensions = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        config = self.directory / "ca.cnf"
        config.write_text(CA_CONFIG.format(directory=self.directory))
        (self.directory / "index.txt").touch()
        serial = self.directory / "serial"
        if not serial.exists():
            serial.write_text("1000\n")  # openssl ca counts up from here
        extensions.write_text(SERVER_EXTENSIONS.format(names=names))
        self.run("req", *NEW_KEY, "-keyout", pair.key, "-out", request, "-subj", f"/CN={name}")
        dates = ["-days", "2"] if start is None else ["-startdate", start, "-enddate", str(end)]
        self.run(
            "ca", "-batch", "-notext", "-config", config, "-cert", ca.cert, "-keyfile", ca.key,
            "-in", request, "-out", pair.cert, "-extfile", extensions, *dates,
        )  # fmt: skip
        return pair


@attrs.frozen
class Certificates:
    trusted_ca: KeyPair
    good: KeyPair
    expired: KeyPair
    other_name: KeyPair
    unknown_ca_signed: KeyPair
    self_signed: KeyPair


def make_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Every certificate the TLS tests use, in a new temporary directory."""
    openssl = require_binary("openssl", package="openssl", needed_for="wss:// failures")
    pki = Pki(tmp_path_factory.mktemp("pki"), openssl)
    trusted = pki.ca("trusted-ca")
    unknown = pki.ca("unknown-ca")
    return Certificates(
        trusted_ca=trusted,
        good=pki.issue(trusted, "good"),
        expired=pki.issue(trusted, "expired", start="20200101000000Z", end="20200102000000Z"),
        other_name=pki.issue(trusted, "other-name", names="DNS:feed.example"),
        unknown_ca_signed=pki.issue(unknown, "unknown-ca-signed"),
        self_signed=pki.self_signed("self-signed"),
    )
