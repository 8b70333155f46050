"""TURN for real: coturn (static-auth-secret) in a namespace between a client and the server; the
client cannot reach the server's media address directly, joins with the credentials from its
`joined` answer, and exchanges video through relay candidates. Expired credentials are refused.

Namespaces (all addresses in 198.18.0.0/15, nothing in the root namespace):
    S (sfu + a direct peer) 198.18.11.1 ── 198.18.11.2 T (coturn relay side)
    S (signaling only)      198.18.12.1 ── 198.18.12.2 C (the TURN-only client)
    T (coturn listening)    198.18.13.1 ── 198.18.13.2 C
C has no route to 198.18.11.0/24, where the server's media sockets are bound, and T forwards
nothing: the only media path from C to S goes through coturn."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sfu.ice_servers import turn_credentials
from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.slow]

TURN_SECRET = "coturn-static-auth-secret-for-tests"
LINKS = (("t", "s", "198.18.11.2", "198.18.11.1"), ("s", "c", "198.18.12.1", "198.18.12.2"),
         ("t", "c", "198.18.13.1", "198.18.13.2"))
SFU_MEDIA, SFU_SIGNALING, TURN_LISTEN, TURN_RELAY = "198.18.11.1", "198.18.12.1", "198.18.13.1", "198.18.11.2"


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed (scripts/test.sh installs it)")
    tag = f"sfut{os.getpid() % 100000}"
    names = {role: f"{tag}{role}" for role in "tsc"}
    try:
        for name in names.values():
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        for a, b, address_a, address_b in LINKS:
            if_a, if_b = f"{tag}{a}{b}", f"{tag}{b}{a}"
            run("ip", "link", "add", if_a, "netns", names[a], "type", "veth", "peer", "name", if_b, "netns", names[b])
            run("ip", "-n", names[a], "addr", "add", f"{address_a}/24", "dev", if_a)
            run("ip", "-n", names[b], "addr", "add", f"{address_b}/24", "dev", if_b)
            run("ip", "-n", names[a], "link", "set", if_a, "up")
            run("ip", "-n", names[b], "link", "set", if_b, "up")
        run("ip", "netns", "exec", names["t"], "sysctl", "-qw", "net.ipv4.ip_forward=0")
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def in_ns(ns: str, *argv: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=ROOT, text=True, env={**os.environ, **(env or {})},
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[str], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared:\n{log.read_text(errors='replace')[-3000:]}")


def peer(ns: str, *args: str, timeout_s: float = 90) -> dict[str, object]:
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.ops.turn_peer", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"peer printed no result (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}"
    return dict(json.loads(lines[-1]))


def test_a_client_reachable_only_through_coturn_exchanges_media(namespaces: dict[str, str], tmp_path: Path) -> None:
    turn_log, sfu_log = tmp_path / "coturn.log", tmp_path / "sfu.log"
    coturn = in_ns(namespaces["t"], "turnserver", "-n", f"--listening-ip={TURN_LISTEN}", f"--relay-ip={TURN_RELAY}",
                   "--listening-port=3478", "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}",
                   "--realm=sfu.test", "--no-tcp", "--no-tls", "--no-dtls", "--no-cli", "--no-tcp-relay",
                   "--fingerprint", "--min-port=49160", "--max-port=49260", f"--log-file={turn_log}",
                   "--simple-log", f"--pidfile={tmp_path / 'coturn.pid'}", f"--userdb={tmp_path / 'turndb'}",
                   log=tmp_path / "coturn.out")
    port = free_port()
    sfu = in_ns(namespaces["s"], sys.executable, "-m", "sfu", "serve", "--host", SFU_SIGNALING, "--port", str(port),
                "--media-address", SFU_MEDIA, "--no-loopback-candidates", "--drain-timeout", "3", log=sfu_log,
                env={"SFU_TURN__URLS": json.dumps([f"turn:{TURN_LISTEN}:3478?transport=udp"]),
                     "SFU_TURN__SECRET": TURN_SECRET, "SFU_TURN__CREDENTIAL_TTL_S": "600"})
    try:
        wait_for_line(sfu_log, "serving on", sfu)
        wait_for_line(turn_log, "Total General servers", coturn)
        url = f"http://{SFU_SIGNALING}:{port}"
        results: dict[str, dict[str, object]] = {}

        def run_peer(role: str, ns: str) -> None:
            results[role] = peer(ns, "--url", url, "--name", role)

        threads = [threading.Thread(target=run_peer, args=("direct", namespaces["s"])),
                   threading.Thread(target=run_peer, args=("relayed", namespaces["c"]))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        relayed, direct = results["relayed"], results["direct"]
        context = f"\nrelayed={relayed}\ndirect={direct}\nsfu log:\n{sfu_log.read_text()[-2000:]}"
        turn_entry = next(s for s in relayed["ice_servers"] if s.get("username"))  # type: ignore[attr-defined]
        assert turn_entry["urls"] == [f"turn:{TURN_LISTEN}:3478?transport=udp"], context
        assert relayed["candidate"] == "relay", "the TURN-only client's media went through coturn" + context
        assert relayed["ok"] and direct["ok"], "both decoded the other's video" + context
        assert direct["candidate"] == "host", context
    finally:
        for proc in (sfu, coturn):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def test_coturn_refuses_credentials_past_their_ttl(namespaces: dict[str, str], tmp_path: Path) -> None:
    turn_log = tmp_path / "coturn.log"
    coturn = in_ns(namespaces["t"], "turnserver", "-n", f"--listening-ip={TURN_LISTEN}", f"--relay-ip={TURN_RELAY}",
                   "--listening-port=3478", "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}",
                   "--realm=sfu.test", "--no-tcp", "--no-tls", "--no-dtls", "--no-cli", "--fingerprint",
                   f"--log-file={turn_log}", "--simple-log", f"--pidfile={tmp_path / 'coturn.pid'}",
                   f"--userdb={tmp_path / 'turndb'}", log=tmp_path / "coturn.out")
    try:
        wait_for_line(turn_log, "Total General servers", coturn)
        server = f"{TURN_LISTEN}:3478"
        fresh = turn_credentials(TURN_SECRET, "fresh", ttl_s=60)
        assert peer(namespaces["c"], "--allocate", server, *fresh)["allocated"] is True
        short = turn_credentials(TURN_SECRET, "short", ttl_s=1)
        time.sleep(2.5)
        refused = peer(namespaces["c"], "--allocate", server, *short)
        assert refused["allocated"] is False and "401" in str(refused["error"]), refused
        forged = (fresh[0], turn_credentials("not-the-secret", "fresh", ttl_s=60)[1])
        assert peer(namespaces["c"], "--allocate", server, *forged)["allocated"] is False
    finally:
        coturn.terminate()
        try:
            coturn.wait(10)
        except subprocess.TimeoutExpired:
            coturn.kill()
            coturn.wait(5)
