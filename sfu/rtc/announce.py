"""Announced addresses for a server behind 1:1 NAT: the host candidates (and `c=` lines) of the
server's SDP carry the public address instead of the private one it binds (pion's NAT1To1IPs
with host candidates). Only the text changes: the socket stays on the private address, and the
NAT maps the public one to it."""

from __future__ import annotations

import ipaddress
import re

_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host\b.*)$", re.M)
_CONNECTION = re.compile(r"^(c=IN IP[46] )(\S+)(.*)$", re.M)


class AddressMap:
    """From `network.announced_ips`: "PUBLIC" maps every non-loopback address of its IP version,
    "PUBLIC/PRIVATE" maps only PRIVATE."""

    def __init__(self, entries: list[str]) -> None:
        self.by_private: dict[str, str] = {}
        self.by_version: dict[int, str] = {}
        for entry in entries:
            public, _, private = entry.partition("/")
            if private:
                self.by_private[private] = public
            else:
                self.by_version.setdefault(ipaddress.ip_address(public).version, public)

    def __bool__(self) -> bool:
        return bool(self.by_private or self.by_version)

    def public(self, address: str) -> str | None:
        mapped = self.by_private.get(address)
        if mapped is not None:
            return mapped
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None  # an mDNS name or garbage: leave it
        if ip.is_loopback or ip.is_unspecified:
            return None
        return self.by_version.get(ip.version)

    def rewrite_sdp(self, sdp: str) -> str:
        def swap(match: re.Match[str]) -> str:
            public = self.public(match.group(2))
            return match.group(0) if public is None else f"{match.group(1)}{public}{match.group(3)}"

        return _CONNECTION.sub(swap, _CANDIDATE.sub(swap, sdp))
