"""`mailgate dkim keygen DOMAIN SELECTOR [--algorithm rsa-sha256|ed25519-sha256] [--dir D]`.

Writes a new DKIM private key for the webmail (mode 0600, never overwriting a file) and prints
the DNS TXT record to publish (RFC 6376 §3.6.1; ``k=ed25519``: RFC 8463 §4.2) and the
``[[webmail.dkim]]`` table to add to the configuration. Values longer than 255 bytes are split
into several character-strings of one TXT record (RFC 7208 §3.3 style; DKIM joins them, RFC 6376
§3.6.2.2). RSA keys are 2048 bits, written as PKCS#1 PEM; the public part is published as the
base64 of its SubjectPublicKeyInfo. Ed25519 keys are written as the base64 of the 32-byte seed;
the public part is the base64 of the raw 32-byte key.

Default directory: ``DATA_DIR/dkim`` (server.data_dir). Exit status 0, 1 if the file exists,
2 for a bad domain or selector.
"""
from __future__ import annotations

import base64
import os
import re
import sys
from pathlib import Path

SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def add_parser(sub) -> None:
    """The ``dkim`` subcommand for gateway.cli's argparse subparsers."""
    d = sub.add_parser("dkim", help="DKIM keys for mail sent from the webmail").add_subparsers(
        dest="dcmd", required=True)
    k = d.add_parser("keygen", help="write a new key and print its DNS record")
    k.add_argument("domain")
    k.add_argument("selector")
    k.add_argument("--algorithm", choices=["rsa-sha256", "ed25519-sha256"], default="rsa-sha256")
    k.add_argument("--dir", default=None, help="directory for the key file (default DATA_DIR/dkim)")


def run(cfg, args) -> int:
    if args.dcmd == "keygen":
        return keygen(cfg, args.domain, args.selector, args.algorithm, args.dir)
    return 2


def generate(algorithm: str) -> tuple[bytes, str]:
    """(private key file content, public key base64 for p=) for ``algorithm``."""
    if algorithm == "ed25519-sha256":
        import nacl.signing
        key = nacl.signing.SigningKey.generate()
        return (base64.b64encode(bytes(key)) + b"\n",
                base64.b64encode(bytes(key.verify_key)).decode())
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(spki).decode()


def txt_strings(value: str, size: int = 255) -> list[str]:
    """``value`` cut into character-strings of at most ``size`` bytes (a TXT string's limit)."""
    return [value[i:i + size] for i in range(0, len(value), size)] or [""]


def txt_record(domain: str, selector: str, algorithm: str, public: str) -> str:
    """``SELECTOR._domainkey.DOMAIN IN TXT "v=DKIM1; k=...; p=..." ...`` (one line)."""
    k = "ed25519" if algorithm == "ed25519-sha256" else "rsa"
    value = f"v=DKIM1; k={k}; p={public}"
    return f"{selector}._domainkey.{domain} IN TXT " + " ".join(f'"{s}"' for s in txt_strings(value))


def keygen(cfg, domain: str, selector: str, algorithm: str, directory: str | None) -> int:
    from policies.rcpt_address import AddressError, normalize_domain, to_ascii_domain
    try:
        domain = to_ascii_domain(normalize_domain(domain))
    except AddressError as e:
        print(f"mailgate: bad domain {domain!r}: {e}", file=sys.stderr)
        return 2
    if not SELECTOR.match(selector):
        print(f"mailgate: bad selector {selector!r}: letters, digits, '-' and '.' only", file=sys.stderr)
        return 2
    where = Path(directory) if directory else cfg.server.data_dir / "dkim"
    kind = "ed25519" if algorithm == "ed25519-sha256" else "rsa"
    path = where / f"{domain}.{selector}.{kind}.key"
    private, public = generate(algorithm)
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"mailgate: {path} exists; choose another selector or remove it", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"mailgate: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as f:
        f.write(private)
        f.flush()
        os.fsync(f.fileno())
    print(f"wrote {path} ({algorithm}, mode 0600)")
    print("publish this DNS record:")
    print(txt_record(domain, selector, algorithm, public))
    print("add this to the configuration:")
    print("[[webmail.dkim]]")
    print(f'domain = "{domain}"')
    print(f'selector = "{selector}"')
    print(f'key_file = "{path.resolve()}"')
    print(f'algorithm = "{algorithm}"')
    return 0
