"""Command line: `sfu serve`, `sfu loadtest`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from sfu.config import Config


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    parser.add_argument("--host", default=defaults.host, help="address to listen on (HTTP + WebSocket)")
    parser.add_argument("--port", type=int, default=defaults.port, help="HTTP port")
    parser.add_argument("--max-participants", type=int, default=defaults.max_participants,
                        help="participants per room")
    parser.add_argument("--max-message-bytes", type=int, default=defaults.max_message_bytes,
                        help="largest signaling message")
    parser.add_argument("--no-loopback-candidates", action="store_true",
                        help="do not offer ICE candidates on 127.0.0.1")
    parser.add_argument("--log-level", default=defaults.log_level)
    parser.add_argument("--debug-endpoints", action="store_true",
                        help="serve /debug/objects (object counts; costly, for tests only)")


def serve(args: argparse.Namespace) -> int:
    config = Config(host=args.host, port=args.port, max_participants=args.max_participants,
                    max_message_bytes=args.max_message_bytes,
                    include_loopback_candidates=not args.no_loopback_candidates, log_level=args.log_level,
                    debug_endpoints=args.debug_endpoints)
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_serve(config))


async def _serve(config: Config) -> int:
    from aiohttp import web

    from sfu.rtc import hooks
    from sfu.server.app import create_app

    hooks.check_aiortc()
    hooks.include_loopback_candidates(config.include_loopback_candidates)
    runner = web.AppRunner(create_app(config), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    logging.getLogger("sfu").info("serving on http://%s:%d (demo page at /, signaling at /ws)",
                                  config.host, config.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("sfu").info("shutting down")
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sfu", description="A WebRTC selective forwarding unit")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_arguments(sub.add_parser("serve", help="run a server"))
    loadtest = sub.add_parser("loadtest", help="measure what a server carries")
    try:
        from sfu.loadtest import command as loadtest_command

        loadtest_command.add_arguments(loadtest)
    except ImportError as exc:
        loadtest_command = None  # type: ignore[assignment]
        loadtest.set_defaults(_import_error=str(exc))
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if loadtest_command is None:
        print(f"sfu loadtest is unavailable: {args._import_error}", file=sys.stderr)
        return 2
    return int(loadtest_command.run(args))
