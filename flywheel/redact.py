"""Credentials out of what people read: ``flywheel config show`` and logs.

``SECRET_HINTS`` marks setting names whose whole value is secret; ``redact_text`` finds
credentials inside ordinary values: the password or token in a URI's user part and
``password=``-style options in connection strings (Redis, Azure, OAuth configs).
"""

from __future__ import annotations

import re

SECRET_HINTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "sasl.jaas",
    "key.pem",
    "keystore.key",
    "credential",
    "api_key",
    "apikey",
    "assertion",
    "user.info",
    "extensions",
    "signature",
)
REDACTED = "**********"
# a URI with a user part: the user part may hold ',' and ';' (it runs to the last '@')
_URI_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s]*@[^\s,;/]*")
_AT_TOKEN = re.compile(r"[^\s,;]*@[^\s,;]*")
_OPTION_SECRET = re.compile(
    r"(?i)((?:^|(?<=[^A-Za-z0-9_.-]))[A-Za-z0-9_.-]*?"
    r"(?:password|passwd|pass|pwd|secret|token|key|sig|signature|assertion|auth|authorization|credentials?"
    r"|jwt|session|sessionid|cookie)"
    r"\s*[=:]\s*)(?!(?:bearer|basic|digest|token)(?:\s|%20|\+))(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)

# an HTTP credential after its scheme: "Authorization: Bearer <token>", "Basic <base64>"
_SCHEME_CREDENTIAL = re.compile(r"(?i)\b((?:bearer|basic|digest|token)(?:\s+|%20|\+))[A-Za-z0-9._~+/=%-]{4,}")


def _redact_userinfo(token: str) -> str:
    """``scheme://user:pw@host`` → ``scheme://user:***@host`` (up to the *last* '@', since
    passwords hold '@' and '/'); ``scheme://TOKEN@host`` → ``scheme://***@host``; and
    ``user:pw@host`` without a scheme. An e-mail address (no colon before '@') is left."""
    scheme, sep, rest = token.rpartition("://") if "://" in token else ("", "", token)
    at = rest.rfind("@")
    userinfo = rest[:at]
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{scheme}{sep}{user}:{REDACTED}{rest[at:]}"
    if sep and "/" not in userinfo:
        return f"{scheme}{sep}{REDACTED}{rest[at:]}"
    return token


def redact_text(text: str) -> str:
    """``text`` with credentials in URIs (``u:pw@host``, ``//token@host``) and in
    ``key=value`` options replaced by REDACTED."""
    text = _URI_USERINFO.sub(lambda m: _redact_userinfo(m.group()), text)
    text = _AT_TOKEN.sub(lambda m: m.group() if REDACTED in m.group() else _redact_userinfo(m.group()), text)
    text = _SCHEME_CREDENTIAL.sub(rf"\g<1>{REDACTED}", text)
    return _OPTION_SECRET.sub(
        lambda m: m.group() if m.group(2).endswith(REDACTED) else f"{m.group(1)}{REDACTED}", text
    )
