"""Janus 1.1.2 (Debian package) in its own network namespace, for comparison runs.

The namespace gets one veth pair (host 198.18.x.1/30, namespace 198.18.x.2/30); Janus gathers ICE
candidates only on its veth end (it skips loopback), runs the videoroom plugin and HTTP transport
only, logs at level 2, and is stopped and its namespace deleted on :meth:`JanusServer.stop` (also
from ``atexit`` if the caller never gets there).
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

JANUS_BINARY = "janus"
JANUS_LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
SUBNET_BASE = ipaddress.IPv4Address("198.18.0.0")
HTTP_PORT = 8088
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
INSTALL_TIMEOUT_S = 600.0


class JanusUnavailable(RuntimeError):
    """Janus cannot run here (not root, no package, no namespaces)."""


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


def ensure_installed(install: bool = True) -> str:
    """Path of the janus binary, installing the Debian package if allowed and missing."""
    path = shutil.which(JANUS_BINARY)
    if path:
        return path
    if not install:
        raise JanusUnavailable("janus is not installed (apt-get install -y janus)")
    if os.geteuid() != 0:
        raise JanusUnavailable("janus is not installed and installing it needs root")
    logger.info("installing janus with apt-get")
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "janus"],
            check=True,
            capture_output=True,
            timeout=INSTALL_TIMEOUT_S,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise JanusUnavailable(f"apt-get install janus failed: {exc}") from exc
    path = shutil.which(JANUS_BINARY)
    if not path:
        raise JanusUnavailable("janus still missing after apt-get install")
    return path


def _used_addresses() -> set[str]:
    out = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}


def _disable_list(folder: Path, keep: str) -> str:
    if not folder.is_dir():
        return ""
    names = sorted(p.name for p in folder.glob("*.so") if p.name != keep)
    return ",".join(names)


def write_config(config_dir: Path, veth: str, address: str) -> Path:
    """A minimal Janus configuration: videoroom + HTTP on ``address`` only, no events, no loggers."""
    plugins, transports = JANUS_LIB_DIR / "plugins", JANUS_LIB_DIR / "transports"
    (config_dir / "janus.jcfg").write_text(
        f"""general: {{
  configs_folder = "{config_dir}"
  plugins_folder = "{plugins}"
  transports_folder = "{transports}"
  events_folder = "{JANUS_LIB_DIR / "events"}"
  loggers_folder = "{JANUS_LIB_DIR / "loggers"}"
  debug_level = 2
  session_timeout = 120
}}
certificates: {{
}}
media: {{
}}
nat: {{
  ice_enforce_list = "{veth}"
}}
plugins: {{
  disable = "{_disable_list(plugins, "libjanus_videoroom.so")}"
}}
transports: {{
  disable = "{_disable_list(transports, "libjanus_http.so")}"
}}
loggers: {{
  disable = "{_disable_list(JANUS_LIB_DIR / "loggers", "")}"
}}
events: {{
  broadcast = false
  disable = "{_disable_list(JANUS_LIB_DIR / "events", "")}"
}}
"""
    )
    (config_dir / "janus.transport.http.jcfg").write_text(
        f"""general: {{
  json = "plain"
  base_path = "/janus"
  http = true
  port = {HTTP_PORT}
  ip = "{address}"
  https = false
}}
admin: {{
  admin_http = false
}}
"""
    )
    (config_dir / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return config_dir / "janus.jcfg"


class JanusServer:
    """Owns the namespace, the veth pair, the config folder and the Janus process."""

    def __init__(self, install: bool = True, debug_level: int = 2) -> None:
        if os.geteuid() != 0:
            raise JanusUnavailable("Janus runs in a network namespace, which needs root")
        self.binary = ensure_installed(install)
        self.debug_level = debug_level
        tag = f"{os.getpid() % 100000}"
        self.netns = f"sfult{tag}"
        self.veth_host, self.veth_ns = f"vlt{tag}h", f"vlt{tag}n"
        self.host_address, self.janus_address = self._free_subnet()
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self._netns_created = False
        self._veth_created = False

    @staticmethod
    def _free_subnet() -> tuple[str, str]:
        used = _used_addresses()
        for index in range(0, 1024, 4):
            host, peer = str(SUBNET_BASE + index + 1), str(SUBNET_BASE + index + 2)
            if host not in used and peer not in used:
                return host, peer
        raise JanusUnavailable("no free /30 in 198.18.0.0/22")

    @property
    def base_url(self) -> str:
        return f"http://{self.janus_address}:{HTTP_PORT}/janus"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        atexit.register(self.stop)
        try:
            self._create_network()
            self.workdir = Path(tempfile.mkdtemp(prefix="sfu-janus-"))
            config = write_config(self.workdir, self.veth_ns, self.janus_address)
            log = (self.workdir / "janus.log").open("wb")
            # `ip netns exec` execs janus in place, so the Popen pid is Janus itself
            self.process = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    self.binary,
                    "-C",
                    str(config),
                    "-F",
                    str(self.workdir),
                    "-E",
                    self.veth_ns,
                    "-d",
                    str(self.debug_level),
                    "-o",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            log.close()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _create_network(self) -> None:
        try:
            _run("ip", "netns", "add", self.netns)
            self._netns_created = True
            _run("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns)
            self._veth_created = True
            _run("ip", "link", "set", self.veth_ns, "netns", self.netns)
            _run("ip", "addr", "add", f"{self.host_address}/30", "dev", self.veth_host)
            _run("ip", "link", "set", self.veth_host, "up")
            ns = ("ip", "netns", "exec", self.netns)
            _run(*ns, "ip", "addr", "add", f"{self.janus_address}/30", "dev", self.veth_ns)
            _run(*ns, "ip", "link", "set", self.veth_ns, "up")
            _run(*ns, "ip", "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            raise JanusUnavailable(f"cannot create namespace: {exc.stderr.strip()}") from exc

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise JanusUnavailable(f"janus exited at start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/info", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise JanusUnavailable(f"janus did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.workdir is None or not (self.workdir / "janus.log").exists():
            return ""
        return "\n".join((self.workdir / "janus.log").read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop Janus and remove the namespace, veth and config; safe to call twice."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(STOP_TIMEOUT_S)
            self.process = None
        if self._veth_created:
            _run("ip", "link", "del", self.veth_host, check=False)  # gone already if the ns held it
            self._veth_created = False
        if self._netns_created:
            _run("ip", "netns", "del", self.netns, check=False)
            self._netns_created = False
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        atexit.unregister(self.stop)
