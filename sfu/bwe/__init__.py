"""Bandwidth: per-subscriber estimates and the layer allocator."""
