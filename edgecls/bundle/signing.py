"""Signed bundles (OpenSSF model signing, `model-signing`): every file of a bundle is hashed into
one signed manifest, `bundle.sig`, beside them, with an elliptic-curve key, so a board verifies it
offline against the public key it trusts. A changed, added or missing file, an unsigned bundle,
or a signature by another key is one line that names what failed."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from edgecls.errors import EdgeclsError

SIGNATURE = "bundle.sig"
PASSWORD_ENV = "EDGECLS_KEY_PASSWORD"  # the private key's password, where it has one


class SignatureRefused(EdgeclsError):
    """A bundle that is not signed by the trusted key exactly as it is now."""


def _model_signing():
    try:
        from model_signing import hashing, signing, verifying
    except ImportError as exc:
        raise EdgeclsError(
            f"signing needs the model-signing package ({exc.name or exc}): "
            "pip install 'edgecls[device]'"
        ) from None
    return hashing, signing, verifying


def check_key(path: Path, option: str) -> Path:
    """Before minutes of work that end in signing, not after."""
    if not Path(path).is_file():
        raise EdgeclsError(f"{option} {path}: not found; give the PEM file of an EC key")
    return Path(path)


def sign_bundle(root: Path, key: Path, option: str = "--key") -> Path:
    """Sign every file of the bundle; the signature is written whole or not at all (a stop in
    the middle leaves the bundle as it was: unsigned, or signed as before)."""
    hashing, signing, _ = _model_signing()
    root, key = Path(root), check_key(key, option)
    if not root.is_dir():
        raise EdgeclsError(f"{root}: not a bundle folder")
    final, partial = root / SIGNATURE, root / f".{SIGNATURE}.{uuid.uuid4().hex[:8]}.tmp"
    config = signing.Config().set_hashing_config(_hashing(hashing, root, partial))
    try:
        config.use_elliptic_key_signer(private_key=key, password=os.environ.get(PASSWORD_ENV))
        config.sign(root, partial)
        os.replace(partial, final)
    except (ValueError, TypeError) as exc:  # not a private EC key, a wrong password
        raise EdgeclsError(f"{option} {key}: cannot sign with it ({_first_line(exc)})") from None
    finally:
        partial.unlink(missing_ok=True)
    return final


def verify_bundle(root: Path, trust: Path) -> None:
    """Raise SignatureRefused unless the bundle is, file for file, what `trust`'s key signed."""
    hashing, _, verifying = _model_signing()
    root, trust = Path(root), check_key(trust, "--trust")
    signature = root / SIGNATURE
    if not signature.is_file():
        raise SignatureRefused(
            f"{root}: unsigned (no {SIGNATURE}); --trust accepts only bundles signed by its "
            "key: sign it with `edgecls sign BUNDLE --key private.pem`"
        )
    config = verifying.Config().set_hashing_config(_hashing(hashing, root))
    try:
        config.use_elliptic_key_verifier(public_key=trust)
        config.verify(root, signature)
    except Exception as exc:  # model-signing raises ValueError, JSON and protobuf errors alike
        raise SignatureRefused(f"{root}: signature refused: {_why(exc, trust)}") from None


def _hashing(hashing, root: Path, *also: Path):
    """Every file but the signature itself (and the one being written)."""
    ignored = [root / SIGNATURE, *also]
    return hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=False)


_REASONS = (  # model-signing's messages (1.1), often inside a list's repr: quotes may be escaped
    (re.compile(r"Hash mismatch for \\?'([^'\\]+)"), "{} changed since it was signed"),
    (re.compile(r"Extra files found in model [^:]*: ([^\"\]]+)"), "not signed: {} added"),
    (re.compile(r"Missing files in model [^:]*: ([^\"\]]+)"), "{} missing since it was signed"),
    (re.compile(r"Key mismatch"), "signed by another key than {trust}"),
)


def _why(exc: Exception, trust: Path) -> str:
    text = str(exc)
    for pattern, reason in _REASONS:
        found = pattern.search(text)
        if found:
            names = found.group(1) if found.groups() else ""
            return reason.format(names.strip("'\" "), trust=trust)
    return f"{SIGNATURE} is not a signature model-signing can read ({_first_line(exc)})"


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
