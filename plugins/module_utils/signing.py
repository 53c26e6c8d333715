# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ed25519 signatures of manifests in the OpenSSH SSHSIG format.

A set's ``manifest.json.sig`` is what ``ssh-keygen -Y sign -n caas-backup``
would write for its ``manifest.json`` (openssh PROTOCOL.sshsig), so a stock
``ssh-keygen -Y verify -f allowed_signers -I <identity> -n caas-backup -s
manifest.json.sig < manifest.json`` checks it without this collection.
The backup side holds the private key; restore and verify hold only the
trusted public keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError, IntegrityError

try:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
except ImportError:  # checked by BackupModule when signing options are given
    serialization = None

NAMESPACE = "caas-backup"
KEY_TYPE = "ssh-ed25519"
_MAGIC = b"SSHSIG"
_VERSION = 1
_HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
_WIDTH = 70  # ssh-keygen's armor line length
_KEY_RE = re.compile(r"(?:^|\s)ssh-ed25519\s+([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$")


class SignatureError(IntegrityError):
    """A signature is missing, malformed, made by an untrusted key, or does not match the data."""


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    """Reads the SSH wire encoding (uint32 and length-prefixed strings) of one blob."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.offset, self.what = data, 0, what

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise SignatureError(f"{self.what} is truncated")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def uint32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def string(self) -> bytes:
        return self.take(self.uint32())

    def end(self) -> None:
        if self.offset != len(self.data):
            raise SignatureError(f"{self.what} has {len(self.data) - self.offset} trailing bytes")


def fingerprint(public_blob: bytes) -> str:
    """The key's fingerprint as ``ssh-keygen -l`` prints it (``SHA256:...``)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(public_blob).digest()).decode().rstrip("=")


def _public_blob(raw: bytes) -> bytes:
    return _string(KEY_TYPE.encode()) + _string(raw)


def _signed_data(namespace: str, hash_name: str, message: bytes) -> bytes:
    digest = _HASHES[hash_name](message).digest()
    return _MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_name.encode()) + _string(digest)


@dataclass(frozen=True)
class TrustedKey:
    """One public key a signature may be made with, and the name it was given under."""

    blob: bytes
    comment: str

    @property
    def label(self) -> str:
        """``SHA256:... (comment)``: how reports name the signer."""
        return fingerprint(self.blob) + (f" ({self.comment})" if self.comment else "")


class SigningKey:
    """An OpenSSH Ed25519 private key that signs manifests."""

    def __init__(self, private_key) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_blob = _public_blob(raw)

    @classmethod
    def from_openssh(cls, text: str, origin: str = "signing_key") -> SigningKey:
        """Load an unencrypted ``-----BEGIN OPENSSH PRIVATE KEY-----`` Ed25519 key; errors never quote it."""
        try:
            key = serialization.load_ssh_private_key(text.strip().encode() + b"\n", password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            cause = "it is passphrase-protected" if "password" in str(exc).lower() else "it is not an OpenSSH key"
            raise ConfigurationError(f"{origin} is not an unencrypted OpenSSH ed25519 private key: {cause}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"{origin} is a {type(key).__name__}, not an ed25519 key (ssh-keygen -t ed25519)")
        return cls(key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_blob)

    def public_line(self, comment: str = "") -> str:
        """The key as an OpenSSH public key line (``ssh-ed25519 AAAA... comment``)."""
        return f"{KEY_TYPE} {base64.b64encode(self.public_blob).decode()}" + (f" {comment}" if comment else "")

    def sign(self, message: bytes, namespace: str = NAMESPACE) -> str:
        """The armored SSHSIG signature of ``message`` (sha512), as ``ssh-keygen -Y sign`` writes it."""
        signature = self._key.sign(_signed_data(namespace, "sha512", message))
        blob = (
            _MAGIC
            + struct.pack(">I", _VERSION)
            + _string(self.public_blob)
            + _string(namespace.encode())
            + _string(b"")
            + _string(b"sha512")
            + _string(_string(KEY_TYPE.encode()) + _string(signature))
        )
        body = base64.b64encode(blob).decode()
        lines = [body[i : i + _WIDTH] for i in range(0, len(body), _WIDTH)]
        return "\n".join([_BEGIN, *lines, _END]) + "\n"


def parse_trusted(lines: list[str], origin: str) -> list[TrustedKey]:
    """Ed25519 public keys from ``.pub`` or allowed_signers lines; principals and options before the key are ignored.

    Blank lines and ``#`` comments are skipped; any other line without an
    ``ssh-ed25519`` key is an error naming ``origin`` and the line number.
    """
    keys: list[TrustedKey] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _KEY_RE.search(text)
        if not match:
            raise ConfigurationError(f"{origin} line {number} holds no ssh-ed25519 public key")
        try:
            blob = base64.b64decode(match.group(1), validate=True)
            reader = _Reader(blob, "key")
            key_type, raw = reader.string(), reader.string()
            reader.end()
        except (binascii.Error, SignatureError):
            raise ConfigurationError(f"{origin} line {number} holds a malformed ssh-ed25519 public key") from None
        if key_type != KEY_TYPE.encode() or len(raw) != 32:
            raise ConfigurationError(f"{origin} line {number} holds a malformed ssh-ed25519 public key")
        principal = text[: match.start()].split()
        keys.append(TrustedKey(blob, (match.group(2) or "").strip() or (principal[0] if principal else "")))
    return keys


def _unarmor(armored: str) -> bytes:
    text = armored.strip()
    if not text.startswith(_BEGIN) or not text.endswith(_END):
        raise SignatureError("it is not an armored SSH signature (-----BEGIN SSH SIGNATURE-----)")
    try:
        return base64.b64decode("".join(text[len(_BEGIN) : -len(_END)].split()), validate=True)
    except binascii.Error:
        raise SignatureError("its armor is not valid base64") from None


def verify(armored: str, message: bytes, trusted: list[TrustedKey], namespace: str = NAMESPACE) -> TrustedKey:
    """Check an armored SSHSIG signature of ``message``; returns the trusted key that made it.

    Raises :class:`SignatureError` saying why when the signature is malformed,
    for another namespace, made by a key not in ``trusted``, or not of this message.
    """
    reader = _Reader(_unarmor(armored), "the signature")
    if reader.take(6) != _MAGIC or reader.uint32() != _VERSION:
        raise SignatureError("it is not an SSHSIG version 1 signature")
    public_blob, sig_namespace, _reserved = reader.string(), reader.string(), reader.string()
    hash_name, signature_blob = reader.string().decode("ascii", "replace"), reader.string()
    reader.end()
    if sig_namespace != namespace.encode():
        raise SignatureError(f"it is for namespace {sig_namespace.decode('utf-8', 'replace')!r}, not {namespace!r}")
    if hash_name not in _HASHES:
        raise SignatureError(f"it uses an unknown hash {hash_name!r}")
    signer = next((key for key in trusted if key.blob == public_blob), None)
    if signer is None:
        raise SignatureError(f"it is made by {fingerprint(public_blob)}, which is not a trusted signer")
    sig = _Reader(signature_blob, "the signature blob")
    sig_type, raw_signature = sig.string(), sig.string()
    sig.end()
    if sig_type != KEY_TYPE.encode():
        raise SignatureError(f"its signature type is {sig_type.decode('ascii', 'replace')!r}, not {KEY_TYPE}")
    public_key = Ed25519PublicKey.from_public_bytes(public_blob[-32:])  # parse_trusted checked its layout
    try:
        public_key.verify(raw_signature, _signed_data(namespace, hash_name, message))
    except InvalidSignature:
        raise SignatureError(f"it does not match the signed data (key {signer.label}): tampered") from None
    return signer


def verify_any(armored: str, message: bytes, trusted: list[TrustedKey], namespace: str = NAMESPACE) -> TrustedKey:
    """:func:`verify` for a file of one or more armored signatures: the first that verifies wins.

    A key rotation (backup_rekey) swaps a signed manifest for a re-signed one; for that moment the
    signature file holds both signatures, so whichever manifest a reader sees verifies. With no
    signature valid, the error is the first one's.
    """
    blocks = [_BEGIN + part.split(_END, 1)[0] + _END for part in armored.split(_BEGIN)[1:]] or [armored]
    errors = []
    for block in blocks:
        try:
            return verify(block, message, trusted, namespace)
        except SignatureError as exc:
            errors.append(exc)
    raise errors[0]
