"""Access tokens: HS256 JWTs that name one room and one identity and grant publishing and/or
subscribing until they expire. `sfu token` mints them; `join` verifies them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from sfu.signaling.messages import ErrorCode, SignalingError

ALGORITHM = "HS256"
CLOCK_SKEW_S = 5  # leeway for `exp`/`iat` between the minting and the verifying machine


@dataclass(frozen=True)
class Grant:
    """What one token allows (dev mode: everything, in any room)."""

    room: str | None  # None: any room (dev mode without a token)
    identity: str
    name: str
    can_publish: bool = True
    can_subscribe: bool = True


def mint_token(secret: str, room: str, identity: str, *, name: str = "", ttl_s: int = 3600,
               can_publish: bool = True, can_subscribe: bool = True, now_s: float | None = None) -> str:
    issued_s = int(now_s if now_s is not None else time.time())
    claims = {
        "sub": identity, "room": room, "name": name, "can_publish": can_publish,
        "can_subscribe": can_subscribe, "iat": issued_s, "exp": issued_s + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Grant:
    """Raises SignalingError: `token_expired` past `exp`, `unauthorized` for anything forged or
    malformed."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=CLOCK_SKEW_S,
                            options={"require": ["exp", "sub", "room"]})
    except jwt.ExpiredSignatureError:
        raise SignalingError(ErrorCode.TOKEN_EXPIRED, "the access token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise SignalingError(ErrorCode.UNAUTHORIZED, f"invalid access token: {exc}") from None
    room, identity = claims.get("room"), claims.get("sub")
    if not isinstance(room, str) or not isinstance(identity, str):
        raise SignalingError(ErrorCode.UNAUTHORIZED, "invalid access token: 'room' and 'sub' must be strings")
    return Grant(room=room, identity=identity, name=str(claims.get("name") or ""),
                 can_publish=claims.get("can_publish", True) is True,
                 can_subscribe=claims.get("can_subscribe", True) is True)


def authorize_join(*, dev_mode: bool, secret: str, token: str | None, room: str, identity: str) -> Grant:
    """The grant a `join` gets: a valid token for this very room, or (dev mode) anything."""
    if not token:
        if dev_mode:
            return Grant(room=None, identity=identity, name="")
        raise SignalingError(ErrorCode.UNAUTHORIZED, "this server requires an access token ('token' in join)")
    if not secret:  # dev mode with no key configured: tokens cannot be checked, so they are ignored
        return Grant(room=None, identity=identity, name="")
    grant = verify_token(secret, token)
    if grant.room != room:
        raise SignalingError(ErrorCode.FORBIDDEN, f"the access token does not grant room '{room}'")
    return grant
