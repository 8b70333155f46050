"""A selective forwarding unit for WebRTC group calls, built on aiortc."""

__version__ = "0.1.0"
