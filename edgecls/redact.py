"""Secrets out of what edgecls shows: the one redaction of credentials in URLs, used for every
source name, record, status line, error and log that names a camera URL, a broker or a pipeline.

A camera URL (`rtsp://admin:PASS@cam/...`) and an MQTT URL (`mqtt://user:PASS@broker/...`) carry
their password; records go to a JSON log, MQTT and /latest, errors and logs to the journal, so the
password would land wherever those go. The real URL is only handed to the library that connects.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ -- the userinfo runs to the last "@" before the host's end, so a password
# with an unescaped "@" (`admin:p@ss@cam`) is masked whole, as urlsplit reads it; failing that, a
# `user:` followed by an unescaped "/", "?" or "#" (a base64 password from an EnvironmentFile)
# runs to the last "@" of the word: better a host:port URL with an "@" in its path shown masked
# than a password shown
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^\s/?#]*|[^\s:/?#@]*:\S*)@"
)
# a query parameter that holds a secret: password=, token=, access_token=, api_key=, sig=, ...
_SECRET_KEYS = (
    "password|passwd|pass|pwd|psw|pw|passphrase|loginpas|secret|token|key|apikey|auth|authbasic|"
    "authorization|signature|sig|credential|credentials|session|sessionid"
)
_QUERY = re.compile(
    rf"(?P<head>[?&;#](?:[A-Za-z0-9]*[_\-.])*(?:{_SECRET_KEYS})=)(?P<value>[^&;#\s\"']*)",
    re.IGNORECASE,
)


# a GStreamer element's password property: rtspsrc user-pw=..., souphttpsrc proxy-pw=...
_PROPERTY = re.compile(
    r"(?P<head>\b[\w-]*(?:-pw|-password|passwd|passphrase)=)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|\S+)"
)
# user:password@host where the password holds spaces (a URL pasted from a camera's manual): the
# password runs to the "@" before a host name, on the same line
_SPACED = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s:/?#@]*):(?P<pw>[^@\n]* [^@\n]*)@"
    r"(?=[\w.\[\]:-]+(?:[/?#\s]|$))"
)


def redact(text: str, keep_user: bool = True) -> str:
    """`text` with every URL's password (and secret query values) replaced by ***.

    keep_user=True names the user (`rtsp://admin:***@cam/x`), for errors and logs that help
    someone fix a login; keep_user=False drops the user info (`rtsp://cam/x`), for a source's name
    in records. Works on free text too (a GStreamer pipeline, an exception's message) and never
    raises: a malformed URL is shown redacted as well."""
    text = _SPACED.sub(lambda m: m["scheme"] + _userinfo(m["user"] + ":", keep_user), str(text))
    text = _USERINFO.sub(lambda m: m["scheme"] + _userinfo(m["info"], keep_user), text)
    text = _QUERY.sub(lambda m: m["head"] + (MASK if m["value"] else ""), text)
    return _PROPERTY.sub(lambda m: m["head"] + MASK, text)


def _userinfo(info: str, keep_user: bool) -> str:
    if not keep_user:
        return ""
    user, colon, _ = info.partition(":")
    # a name before a colon is a user; a lone userinfo (`https://TOKEN@host`) may be a token
    return f"{user}:{MASK}@" if user and colon else f"{MASK}@"


def one_line(text: str) -> str:
    """`text` as one line of a log: control characters (a line break or an escape sequence in a
    file name, which would forge a line or colour a terminal) and lone surrogates shown as
    escapes."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in str(text))
