"""Static checks of the demo page's files (no browser): they exist, reference each other, parse."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "sfu" / "web"
MODULES = ["sfu-client.js", "app.js"]
CLIENT_EVENTS = ["joined", "participantjoined", "participantleft", "trackpublished",
                 "trackunpublished", "track", "trackended", "trackmuted", "trackunmuted",
                 "draining", "error", "state"]


def test_index_page_loads_the_served_assets() -> None:
    html = (WEB / "index.html").read_text()
    for name in ("app.js", "style.css"):
        assert f'"/web/{name}"' in html, f"index.html does not load /web/{name}"
        assert (WEB / name).is_file()
    assert 'type="module"' in html
    assert 'id="leave"' in html and 'id="status"' in html


def test_app_imports_the_client_module_by_its_served_path() -> None:
    assert "from '/web/sfu-client.js'" in (WEB / "app.js").read_text()


def test_client_module_exports_the_documented_api() -> None:
    source = (WEB / "sfu-client.js").read_text()
    assert "export class SfuClient extends EventTarget" in source
    for method in ("async join(", "async publish(", "async unpublish(", "leave("):
        assert method in source, f"SfuClient has no {method}…)"
    emitted = set(re.findall(r"_emit\('(\w+)'", source))
    assert emitted == set(CLIENT_EVENTS), f"events emitted: {sorted(emitted)}"
    # Publishing must never reuse a receiving transceiver, and never fall back to a public STUN server.
    assert "addTrack(" not in source
    assert "stun:" not in source


@pytest.mark.parametrize("name", MODULES)
def test_javascript_module_parses(name: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot syntax-check JavaScript")
    copy = tmp_path / (Path(name).stem + ".mjs")  # .mjs: node parses it as an ES module
    copy.write_text((WEB / name).read_text())
    result = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
