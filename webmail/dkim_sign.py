"""DKIM signatures for mail sent from the webmail (RFC 6376; Ed25519: RFC 8463), with dkimpy.

Every key of ``[[webmail.dkim]]`` whose ``domain`` is the From domain signs the message, so a
domain with an RSA-2048 and an Ed25519 key gets two ``DKIM-Signature`` fields (not every
receiver verifies Ed25519 yet; RFC 8463 §4 recommends signing with both). Canonicalisation is
relaxed/relaxed; no ``l=`` (a body length tag lets anyone append content). The header fields in
``OVERSIGN`` are over-signed (RFC 6376 §5.4.2, §8.15): each is listed in ``h=`` once more than it
occurs, so a receiver that sees a second ``Subject`` (or an added ``Cc``) fails the signature.

The signatures are computed over the exact bytes handed to the spool (CRLF line ends) and
prepended to them; nothing re-serialises the message afterwards. Signing is CPU work and reads
key files: ``sign_async`` runs it in a thread, off the event loop.

Key files: a PEM RSA private key (PKCS#1 ``BEGIN RSA PRIVATE KEY``, as ``mailgate dkim keygen``
writes it, or PKCS#8 ``BEGIN PRIVATE KEY``), or for ed25519-sha256 the base64 of the 32-byte
seed. They are read at each signing (a rotated key takes effect without a restart).
"""
from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from pathlib import Path

import dkim

#: Header fields over-signed in every signature (WEBMAIL-NOTES.md, "Sending").
OVERSIGN = ("from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
            "references", "mime-version", "content-type")
#: Signed once each when present (not over-signed: a relay may legitimately add none of them).
ALSO_SIGN = ("content-transfer-encoding", "thread-index", "thread-topic")


class DkimError(Exception):
    """A key file cannot be read or is not a key of its algorithm (message names the file)."""


@dataclass(frozen=True)
class SigningKey:
    domain: str          # d= (A-label form)
    selector: str        # s=
    algorithm: str       # rsa-sha256 | ed25519-sha256
    key_file: Path


def keys_for(cfg_keys, domain: str) -> list[SigningKey]:
    """The configured keys (``cfg.webmail.dkim``: DkimKey items) whose domain is ``domain``
    (compared in the A-label form, case-insensitively), RSA first."""
    want = _ascii(domain)
    out = [SigningKey(_ascii(k.domain), k.selector, k.algorithm, Path(k.key_file))
           for k in cfg_keys if _ascii(k.domain) == want]
    return sorted(out, key=lambda k: k.algorithm != "rsa-sha256")


def load_private_key(key: SigningKey) -> bytes:
    """The key in the form dkimpy takes: PEM bytes (RSA; PKCS#8 is converted to PKCS#1) or the
    base64 seed (Ed25519). Raises DkimError."""
    try:
        data = key.key_file.read_bytes()
    except OSError as e:
        raise DkimError(f"{key.key_file}: cannot read DKIM key: {e.strerror or e}") from None
    if key.algorithm == "ed25519-sha256":
        seed = data.strip()
        try:
            if len(base64.b64decode(seed, validate=True)) != 32:
                raise ValueError
        except ValueError:
            raise DkimError(f"{key.key_file}: not the base64 of a 32-byte Ed25519 seed") from None
        return seed
    if b"BEGIN RSA PRIVATE KEY" in data:
        return data
    if b"BEGIN PRIVATE KEY" in data:
        try:
            from cryptography.hazmat.primitives import serialization
            k = serialization.load_pem_private_key(data, password=None)
            return k.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption())
        except Exception:
            raise DkimError(f"{key.key_file}: not a PEM RSA private key") from None
    raise DkimError(f"{key.key_file}: not a PEM RSA private key")


def include_headers(message: bytes) -> list[bytes]:
    """``h=`` for ``message``: every OVERSIGN field once per occurrence plus once more, and the
    ALSO_SIGN fields that occur (once per occurrence)."""
    head = message.split(b"\r\n\r\n", 1)[0]
    names = [m.group(1).lower() for m in re.finditer(rb"^([!-9;-~]+)[ \t]*:", head, re.M)]
    out: list[bytes] = []
    for h in OVERSIGN:
        out += [h.encode()] * (names.count(h.encode()) + 1)
    for h in ALSO_SIGN:
        out += [h.encode()] * names.count(h.encode())
    return out


def sign(message: bytes, keys: list[SigningKey]) -> bytes:
    """``message`` (CRLF line ends) with one DKIM-Signature per key prepended, each computed
    over ``message`` itself. Raises DkimError for a bad key file, ValueError for a message
    without CRLF line ends."""
    if re.search(rb"(?<!\r)\n", message) or re.search(rb"\r(?!\n)", message):
        raise ValueError("DKIM signing needs CRLF line ends only")
    h = include_headers(message)
    sigs = []
    for key in keys:
        priv = load_private_key(key)
        try:
            sig = dkim.sign(message, key.selector.encode(), key.domain.encode(), priv,
                            canonicalize=(b"relaxed", b"relaxed"), include_headers=h,
                            signature_algorithm=key.algorithm.encode(), length=False)
        except dkim.DKIMException as e:
            raise DkimError(f"{key.key_file}: DKIM signing failed: {e}") from None
        sigs.append(sig if sig.endswith(b"\r\n") else sig + b"\r\n")
    return b"".join(sigs) + message


async def sign_async(message: bytes, keys: list[SigningKey]) -> bytes:
    """``sign`` in a worker thread (key files read and RSA computed off the event loop)."""
    if not keys:
        return message
    return await asyncio.to_thread(sign, message, keys)


def _ascii(domain: str) -> str:
    d = domain.strip().rstrip(".").lower()
    if d.isascii():
        return d
    try:
        import idna
        return idna.encode(d, uts46=True).decode()
    except Exception:
        return d
