"""Shared pieces of the operations tests: raw signaling sockets, error expectations, metric scrapes."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from typing import Any

import aiohttp

from sfu.client import SfuClient


async def open_socket(client: SfuClient) -> None:
    """Connect the client's WebSocket without joining."""
    client._session = aiohttp.ClientSession()
    client._ws = await client._session.ws_connect(client.url.replace("http", "ws", 1) + "/ws",
                                                  ssl=True if client.ssl is None else client.ssl)
    client._reader = asyncio.ensure_future(client._read())


async def join_error(client: SfuClient, room: str, token: str | None = None) -> dict[str, Any]:
    """Send `join` on an open socket and return the error that answers it."""
    future = client.expect("error")
    fields: dict[str, Any] = {"room": room}
    if token is not None:
        fields["token"] = token
    await client.send("join", **fields)
    return dict(await asyncio.wait_for(future, 10))


def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics: 'name{labels}' -> value."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def metric_names(url: str) -> set[str]:
    """Every metric family name /metrics declares (# TYPE lines) plus every sample name."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    names |= {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    return names


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         context: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")
