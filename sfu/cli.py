"""Command line: `sfu serve`, `sfu token`, `sfu loadtest`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from sfu.config import Config, ConfigError, load_config

# flag dest -> (section, key); flags left out do not override the file or the environment
_FLAG_KEYS = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "workers": ("server", "workers"),
    "log_level": ("server", "log_level"),
    "log_json": ("server", "log_json"),
    "debug_endpoints": ("server", "debug_endpoints"),
    "drain_timeout": ("server", "drain_timeout_s"),
    "tls_cert": ("server", "tls_cert"),
    "tls_key": ("server", "tls_key"),
    "max_participants": ("rooms", "max_participants"),
    "resume_grace": ("rooms", "resume_grace_s"),
    "max_message_bytes": ("signaling", "max_message_bytes"),
    "include_loopback_candidates": ("network", "include_loopback_candidates"),
    "media_address": ("network", "media_addresses"),
    "announce_ip": ("network", "announced_ips"),
    "dev_mode": ("auth", "dev_mode"),
}


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    flag = parser.add_argument
    flag("--config", metavar="FILE", help="TOML configuration file (keys: config/reference.toml)")
    flag("--host", help="address to listen on (HTTP + WebSocket) [server.host]")
    flag("--port", type=int, help="HTTP port [server.port]")
    flag("--workers", type=int, metavar="N", help="worker processes (one per core); rooms are spread over "
         "them by name [server.workers]")
    flag("--max-participants", type=int, help="participants per room [rooms.max_participants]")
    flag("--resume-grace", type=float, help="seconds a disconnected participant may resume [rooms.resume_grace_s]")
    flag("--max-message-bytes", type=int, help="largest signaling message [signaling.max_message_bytes]")
    flag("--no-loopback-candidates", dest="include_loopback_candidates", action="store_const", const=False,
         help="do not offer ICE candidates on 127.0.0.1 [network.include_loopback_candidates]")
    flag("--media-address", action="append", metavar="IP",
         help="bind media (ICE) on this local address only; repeatable [network.media_addresses]")
    flag("--announce-ip", action="append", metavar="PUBLIC[/PRIVATE]",
         help="public address for host candidates (1:1 NAT); repeatable [network.announced_ips]")
    flag("--udp-ports", metavar="MIN-MAX", help="UDP port range for media [network.udp_port_min/max]")
    flag("--tls-cert", metavar="PEM", help="certificate chain: serve HTTPS and wss [server.tls_cert]")
    flag("--tls-key", metavar="PEM", help="private key of --tls-cert [server.tls_key]")
    flag("--drain-timeout", type=float, metavar="S", help="on SIGTERM, wait this long for rooms to empty "
         "[server.drain_timeout_s]")
    flag("--dev-mode", dest="dev_mode", action=argparse.BooleanOptionalAction, default=None,
         help="accept joins without an access token [auth.dev_mode]")
    flag("--log-level", choices=("debug", "info", "warning", "error"), help="[server.log_level]")
    flag("--log-json", action="store_const", const=True, help="one JSON object per log line [server.log_json]")
    flag("--debug-endpoints", action="store_const", const=True,
         help="serve /debug/objects (object counts; costly, for tests only) [server.debug_endpoints]")


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, dict[str, Any]] = {}
    for dest, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    ports = getattr(args, "udp_ports", None)
    if ports is not None:
        low, _, high = ports.partition("-")
        try:
            overrides.setdefault("network", {}).update(udp_port_min=int(low), udp_port_max=int(high or low))
        except ValueError:
            raise ConfigError(f"--udp-ports: expected MIN-MAX, got {ports!r}") from None
    return overrides


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, flag_overrides(args))


def serve(args: argparse.Namespace) -> int:
    from sfu import logs
    from sfu.server.run import serve as run_server

    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"sfu serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.server.log_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if config.workers > 1:
        from sfu.server.workers import serve_workers

        return asyncio.run(serve_workers(config))
    return asyncio.run(run_server(config))


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="configuration file holding auth.jwt_secret "
                        "(or set SFU_AUTH__JWT_SECRET)")
    parser.add_argument("--room", required=True)
    parser.add_argument("--identity", required=True, help="who the token is for (its subject)")
    parser.add_argument("--name", default="", help="display name")
    parser.add_argument("--ttl", type=int, metavar="S", help="validity in seconds [auth.default_token_ttl_s]")
    parser.add_argument("--no-publish", action="store_true", help="subscribe only")
    parser.add_argument("--no-subscribe", action="store_true", help="publish only")


def token(args: argparse.Namespace) -> int:
    from sfu.auth import mint_token

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"sfu token: {exc}", file=sys.stderr)
        return 2
    if not config.auth.jwt_secret:
        print("sfu token: auth.jwt_secret is not set (configuration file or SFU_AUTH__JWT_SECRET)", file=sys.stderr)
        return 2
    print(mint_token(config.auth.jwt_secret, args.room, args.identity, name=args.name,
                     ttl_s=args.ttl or config.auth.default_token_ttl_s,
                     can_publish=not args.no_publish, can_subscribe=not args.no_subscribe))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sfu", description="A WebRTC selective forwarding unit")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_arguments(sub.add_parser("serve", help="run a server"))
    _token_arguments(sub.add_parser("token", help="mint an access token (JWT) for one room and identity"))
    loadtest = sub.add_parser("loadtest", help="measure what a server carries")
    try:
        from sfu.loadtest import command as loadtest_command

        loadtest_command.add_arguments(loadtest)
    except ImportError as exc:
        loadtest_command = None  # type: ignore[assignment]
        loadtest.set_defaults(_import_error=str(exc))
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            return serve(args)
        except ConfigError as exc:
            print(f"sfu serve: {exc}", file=sys.stderr)
            return 2
    if args.command == "token":
        return token(args)
    if loadtest_command is None:
        print(f"sfu loadtest is unavailable: {args._import_error}", file=sys.stderr)
        return 2
    return int(loadtest_command.run(args))
