"""Static checks of the demo page's files (no browser): they exist, reference each other, parse."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "sfu" / "web"
# The client's modules: sfu-client.js and what it imports, directly or not.
CLIENT_MODULES = ["sfu-client.js", "sfu-session.js", "sfu-signaling.js", "sfu-negotiation.js", "sfu-local.js",
                  "sfu-remote.js", "sfu-room.js", "sfu-resume.js", "sfu-data.js", "sfu-media.js"]
MODULES = [*CLIENT_MODULES, "app.js"]
IMPORT = re.compile(r"^import\b[^;]*?\bfrom '([^']+)';", re.MULTILINE)
CLIENT_EVENTS = ["joined", "participantjoined", "participantleft", "trackpublished",
                 "trackunpublished", "track", "trackended", "trackmuted", "trackunmuted",
                 "qualitychanged", "layersneeded", "activespeakers", "data", "screenshareended",
                 "draining", "error", "state", "resumed", "trackresumed"]
CLIENT_METHODS = ["async join(", "async publish(", "async unpublish(", "leave(", "async publishScreen(",
                  "async stopScreen(", "async replaceTrack(", "mute(", "setQuality(", "sendData(",
                  "localTracks("]


def test_index_page_loads_the_served_assets() -> None:
    html = (WEB / "index.html").read_text()
    for name in ("app.js", "style.css"):
        assert f'"/web/{name}"' in html, f"index.html does not load /web/{name}"
        assert (WEB / name).is_file()
    assert 'type="module"' in html
    for element in ("leave", "status", "conn-state", "mute-mic", "mute-camera", "share-screen",
                    "chat-log", "chat-form", "chat-input"):
        assert f'id="{element}"' in html, f"index.html has no #{element}"


def _imports(name: str) -> list[str]:
    return IMPORT.findall((WEB / name).read_text())


def _client_source() -> str:
    return "\n".join((WEB / name).read_text() for name in CLIENT_MODULES)


def test_modules_import_each_other_by_their_served_paths() -> None:
    assert _imports("app.js") == ["/web/sfu-client.js"]
    reached, todo = set(), ["sfu-client.js"]
    while todo:
        name = todo.pop()
        reached.add(name)
        for path in _imports(name):
            assert path.startswith("/web/"), f"{name} imports {path}, not a served /web/ path"
            helper = path.removeprefix("/web/")
            assert (WEB / helper).is_file(), f"{name} imports {path}, which does not exist"
            if helper not in reached:
                todo.append(helper)
    assert reached == set(CLIENT_MODULES), f"sfu-client.js reaches {sorted(reached)}"
    on_disk = {p.name for p in WEB.glob("*.js")}
    assert on_disk == set(MODULES), f"unlisted or missing modules: {sorted(on_disk ^ set(MODULES))}"


def test_client_module_exports_the_documented_api() -> None:
    source = (WEB / "sfu-client.js").read_text()
    assert "export class SfuClient extends SfuSession" in source
    assert "export class SfuSession extends EventTarget" in (WEB / "sfu-session.js").read_text()
    for method in CLIENT_METHODS:
        assert f"\n  {method}" in source, f"SfuClient has no {method}…)"
    # Every module of the client sends its events through the client's _emit (theirs is handed over).
    emitted = set(re.findall(r"_emit\('(\w+)'", _client_source()))
    assert emitted == set(CLIENT_EVENTS), f"events emitted: {sorted(emitted)}"
    source = _client_source()
    # Publishing must never reuse a receiving transceiver (RTCPeerConnection.addTrack; a MediaStream's
    # addTrack is fine), and never fall back to a public STUN server.
    assert not re.search(r"(?<!stream)\.addTrack\(", source)
    assert "stun:" not in source


def test_client_follows_the_protocol_for_simulcast_and_data() -> None:
    """Simulcast layers and data-channel labels as docs/protocol.md names them."""
    media = (WEB / "sfu-media.js").read_text()
    for rid, scale in (("q", 4), ("h", 2)):
        assert f"rid: '{rid}', scaleResolutionDownBy: {scale}" in media
    assert "rid: 'f'" in media
    data = (WEB / "sfu-data.js").read_text()
    assert "'sfu-reliable'" in data and "'sfu-lossy'" in data
    assert "ordered: false, maxRetransmits: 0" in data
    client = _client_source()
    for sent in ("'set_quality'", "'mute'"):
        assert f"type: {sent}" in client, f"the client never sends {sent}"
    for received in ("'layers_needed'", "'quality_changed'", "'active_speakers'", "'track_muted'"):
        assert f"case {received}" in client, f"the client does not handle {received}"


@pytest.mark.parametrize("name", MODULES)
def test_javascript_module_parses(name: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot syntax-check JavaScript")
    copy = tmp_path / (Path(name).stem + ".mjs")  # .mjs: node parses it as an ES module
    copy.write_text((WEB / name).read_text())
    result = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_resume_backoff_doubles_from_half_a_second_to_five_with_jitter() -> None:
    """sfu-resume.js: the waits between resume attempts, at the extremes of the jitter."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot run JavaScript")
    script = (f"import {{ backoffDelayMs }} from '{(WEB / 'sfu-resume.js').as_uri()}';\n"
              "const waits = (r) => [1, 2, 3, 4, 5, 6, 9].map((n) => backoffDelayMs(n, () => r));\n"
              "console.log(JSON.stringify([waits(0), waits(0.5), waits(1)]));")
    result = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    low, middle, high = json.loads(result.stdout)
    assert middle == [500, 1000, 2000, 4000, 5000, 5000, 5000]
    assert low == [350, 700, 1400, 2800, 3500, 3500, 3500]
    assert high == [650, 1300, 2600, 5200, 6500, 6500, 6500]
