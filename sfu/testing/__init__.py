"""Synthetic participants for tests, load generation and bots."""
