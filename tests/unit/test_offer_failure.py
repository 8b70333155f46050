"""An offer that fails after aiortc applied it leaves the peer connection in have-remote-offer for
good (aiortc has no rollback): the error says so, so that the participant's socket is closed for a
resume with a fresh peer connection (sfu.room.participant.Participant.on_offer).

No offer found by fuzzing fails at that point (tests/fuzz, and a search of single-line mutations of
aiortc's own offers), so the failure is injected into aiortc's createAnswer."""

from __future__ import annotations

import pytest

from sfu.rtc.peer import PeerSession
from sfu.rtc.sdp import SdpError
from tests.fuzz.test_parser_regressions import offer_sdp


async def test_a_failure_after_the_remote_description_was_applied_is_flagged_unusable() -> None:
    offer = await offer_sdp()
    peer = PeerSession("PA_test", [])
    try:
        async def broken_answer() -> None:
            raise ValueError("injected")

        peer.pc.createAnswer = broken_answer  # type: ignore[method-assign]
        with pytest.raises(SdpError) as caught:
            await peer.answer_offer(offer)
        assert caught.value.unusable
        assert peer.pc.signalingState == "have-remote-offer", "what the flag is about: aiortc cannot roll back"
    finally:
        await peer.pc.close()


async def test_an_offer_refused_before_it_was_applied_leaves_the_connection_usable() -> None:
    offer = (await offer_sdp()).replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 7")  # names a missing mid
    peer = PeerSession("PA_test", [])
    try:
        with pytest.raises(SdpError) as caught:
            await peer.answer_offer(offer)
        assert not caught.value.unusable
        assert peer.pc.signalingState == "stable"
    finally:
        await peer.pc.close()
