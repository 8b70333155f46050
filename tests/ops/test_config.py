"""Configuration: file < environment < flags, and a bad value names its key at start."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sfu.cli import _serve_arguments, flag_overrides
from sfu.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def parse_flags(*argv: str) -> dict:  # type: ignore[type-arg]
    import argparse

    parser = argparse.ArgumentParser()
    _serve_arguments(parser)
    return flag_overrides(parser.parse_args(argv))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sfu.toml"
    path.write_text(text)
    return path


def test_file_is_overridden_by_environment_which_is_overridden_by_flags(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[server]\nport = 9001\nhost = '0.0.0.0'\n[rooms]\nmax_participants = 7\n"
                           "[network]\nannounced_ips = ['203.0.113.7']\n")
    config = load_config(path)
    assert (config.port, config.host, config.max_participants) == (9001, "0.0.0.0", 7)
    monkeypatch.setenv("SFU_SERVER__PORT", "9002")
    monkeypatch.setenv("SFU_NETWORK__ANNOUNCED_IPS", '["198.51.100.1"]')
    config = load_config(path)
    assert (config.port, config.host, config.max_participants) == (9002, "0.0.0.0", 7), "env beats the file"
    assert config.network.announced_ips == ["198.51.100.1"]
    config = load_config(path, parse_flags("--port", "9003", "--max-participants", "3"))
    assert (config.port, config.host, config.max_participants) == (9003, "0.0.0.0", 3), "flags beat env and file"
    assert config.network.announced_ips == ["198.51.100.1"], "keys no flag names keep the env value"


def test_flags_left_out_do_not_override(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[server]\ndebug_endpoints = true\n[network]\n"
                                         "include_loopback_candidates = false\n"), parse_flags())
    assert config.debug_endpoints and not config.include_loopback_candidates
    config = load_config(None, parse_flags("--no-loopback-candidates", "--udp-ports", "40000-40099"))
    assert not config.include_loopback_candidates
    assert (config.network.udp_port_min, config.network.udp_port_max) == (40000, 40099)


def test_existing_flat_names_still_read(tmp_path: Path) -> None:
    config = Config()
    assert (config.max_participants, config.max_message_bytes, config.workers) == (50, 262144, 1)
    assert config.include_loopback_candidates and not config.debug_endpoints
    assert config.rtc_ice_servers() == [] and config.client_ice_servers() == []


@pytest.mark.parametrize(("text", "env", "key"), [
    ("[network]\nudp_port_min = 70000\nudp_port_max = 70001\n", {}, "network.udp_port_min"),
    ("[rooms]\nmax_participants = 'many'\n", {}, "rooms.max_participants"),
    ("[rooms]\nmax_particpants = 3\n", {}, "rooms.max_particpants"),
    ("", {"SFU_SIGNALING__MAX_MESSAGE_BYTES": "lots"}, "signaling.max_message_bytes"),
    ("[auth]\ndev_mode = false\n", {}, "auth.jwt_secret"),
    ("[network]\nannounced_ips = ['not-an-ip']\n", {}, "network.announced_ips"),
])
def test_a_bad_value_is_refused_naming_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                               env: dict[str, str], key: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert key in str(info.value)
    for name in env:
        assert name in str(info.value), "the message says which environment variable set it"


def test_sfu_serve_with_a_bad_value_exits_at_start_with_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 'eighty'\n")
    result = subprocess.run([sys.executable, "-m", "sfu", "serve", "--config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "server.port" in result.stderr


def test_reference_file_documents_every_key_with_its_default() -> None:
    reference = tomllib.loads((ROOT / "config" / "reference.toml").read_text())
    defaults = Config().model_dump()
    assert set(reference) == set(defaults), "every section is in config/reference.toml"
    for section, values in defaults.items():
        assert set(reference[section]) == set(values), f"[{section}] keys in reference.toml"
        for key, value in values.items():
            assert reference[section][key] == value, f"{section}.{key}: reference says the built-in default"
    text = (ROOT / "config" / "reference.toml").read_text()
    for section, values in defaults.items():
        for key in values:
            line = next(line for line in text.splitlines() if line.startswith(f"{key} ") or line.startswith(key + "="))
            assert "#" in line, f"{section}.{key} has a comment"


def test_default_file_is_the_embedded_defaults() -> None:
    assert load_config(ROOT / "config" / "default.toml") == Config()


def test_missing_or_broken_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[server\nport = 1"))
