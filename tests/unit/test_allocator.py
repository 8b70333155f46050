"""LayerAllocator decisions on synthetic estimates: fit, caps, hysteresis, pause, sharing."""

from __future__ import annotations

from sfu.bwe.allocator import Demand, Layer, LayerAllocator
from sfu.bwe.estimator import SubscriberEstimate, undelivered
from sfu.room.allocation import SubscriberBandwidth

LAYERS = [Layer(150_000, 320, 180), Layer(500_000, 640, 360), Layer(1_500_000, 1280, 720)]


def demand(key: str = "cam", current: int | None = 2, **kw) -> Demand:  # type: ignore[no-untyped-def]
    return Demand(key=key, layers=[Layer(x.bitrate_bps, x.width, x.height) for x in LAYERS], current=current, **kw)


def test_new_track_starts_at_the_highest_layer_that_fits_without_a_hold() -> None:
    decision = LayerAllocator().allocate(0, 1_000_000, 0, [demand(current=None, started=False)])["cam"]
    assert decision.layer == 1 and decision.reason == "initial"


def test_down_switch_is_immediate_when_the_estimate_drops() -> None:
    decision = LayerAllocator().allocate(0, 300_000, 0, [demand(current=2)])["cam"]
    assert decision.layer == 0 and decision.reason.startswith("down")


def test_up_switch_waits_for_the_hold_then_happens() -> None:
    allocator = LayerAllocator(up_hold_s=3)
    assert allocator.allocate(0, 5_000_000, 0, [demand(current=0)])["cam"].layer == 0
    assert allocator.allocate(2.9, 5_000_000, 0, [demand(current=0)])["cam"].layer == 0
    decision = allocator.allocate(3.0, 5_000_000, 0, [demand(current=0)])["cam"]
    assert decision.layer == 2 and decision.reason.startswith("up")


def test_a_dip_during_the_hold_restarts_it() -> None:
    allocator = LayerAllocator(up_hold_s=3)
    allocator.allocate(0, 5_000_000, 0, [demand(current=0)])
    allocator.allocate(2, 200_000, 0, [demand(current=0)])  # the estimate dips: no up any more
    assert allocator.allocate(4, 5_000_000, 0, [demand(current=0)])["cam"].layer == 0
    assert allocator.allocate(7, 5_000_000, 0, [demand(current=0)])["cam"].layer == 2


def test_video_pauses_below_the_lowest_layer_and_resumes_after_the_hold() -> None:
    allocator = LayerAllocator(up_hold_s=3, pause_hold_s=0)
    paused = allocator.allocate(0, 100_000, 0, [demand(current=0)])["cam"]
    assert paused.layer is None and paused.reason.startswith("paused")
    assert allocator.allocate(1, 1_000_000, 0, [demand(current=None)])["cam"].layer is None
    resumed = allocator.allocate(4.5, 1_000_000, 0, [demand(current=None)])["cam"]
    assert resumed.layer == 1 and resumed.reason == "resumed"


def test_audio_is_paid_first() -> None:
    # 700 kb/s would carry the middle layer, but 300 kb/s of audio leaves only the low one
    assert LayerAllocator().allocate(0, 700_000, 300_000, [demand(current=0)])["cam"].layer == 0


def test_requested_resolution_caps_the_layer_whatever_the_bandwidth() -> None:
    capped = demand(current=None, started=False, max_width=320, max_height=180)
    assert LayerAllocator().allocate(0, 50_000_000, 0, [capped])["cam"].layer == 0
    by_layer = demand(current=None, started=False, max_layer=1)
    assert LayerAllocator().allocate(0, 50_000_000, 0, [by_layer])["cam"].layer == 1


def test_unknown_sizes_do_not_block_a_layer() -> None:
    unknown = Demand("cam", [Layer(150_000), Layer(500_000), Layer(1_500_000)], None, started=False,
                     max_width=320)
    assert LayerAllocator().allocate(0, 50_000_000, 0, [unknown])["cam"].layer == 2


def test_a_layer_the_publisher_stopped_is_never_chosen() -> None:
    d = demand(current=None, started=False)
    d.layers[2].available = False
    assert LayerAllocator().allocate(0, 50_000_000, 0, [d])["cam"].layer == 1


def test_short_budget_serves_screen_share_before_cameras() -> None:
    tracks = [demand("cam-a", None, started=False), demand("screen", None, started=False, priority=2),
              demand("cam-b", None, started=False)]
    decisions = LayerAllocator().allocate(0, 1_000_000, 0, tracks)
    assert decisions["screen"].layer == 1  # 150+500 for the screen...
    assert decisions["cam-a"].layer == 0 and decisions["cam-b"].layer == 0  # ...every camera still gets video


def test_everyone_gets_the_lowest_layer_before_anyone_gets_more() -> None:
    tracks = [demand(f"cam-{i}", None, started=False) for i in range(4)]
    decisions = LayerAllocator().allocate(0, 700_000, 0, tracks)  # 630 kb/s usable: 4 x 150
    assert [decisions[f"cam-{i}"].layer for i in range(4)] == [0, 0, 0, 0]


def test_when_the_budget_is_too_short_for_all_lower_priority_tracks_pause_first() -> None:
    tracks = [demand("cam", None, started=False), demand("speaker", None, started=False, priority=1)]
    decisions = LayerAllocator().allocate(0, 200_000, 0, tracks)
    assert decisions["speaker"].layer == 0 and decisions["cam"].layer is None


def test_estimate_drops_at_once_and_rises_gradually() -> None:
    estimate = SubscriberEstimate(initial_bps=1_000_000)
    estimate.on_remb(300_000)
    assert estimate.estimate_bps == 300_000
    estimate.on_remb(2_300_000)
    assert 300_000 < estimate.estimate_bps < 1_000_000
    for _ in range(30):
        estimate.on_remb(2_300_000)
    assert estimate.estimate_bps > 2_200_000


def test_the_same_remb_packet_seen_by_several_senders_counts_once() -> None:
    estimate = SubscriberEstimate(initial_bps=100_000)
    packet = object()
    estimate.on_remb(2_000_000, packet)
    once = estimate.estimate_bps
    estimate.on_remb(2_000_000, packet)
    assert estimate.estimate_bps == once and estimate.rembs == 1


def test_heavy_loss_cuts_the_estimate() -> None:
    estimate = SubscriberEstimate(initial_bps=1_000_000)
    estimate.on_loss(0.02)
    assert estimate.estimate_bps == 1_000_000
    estimate.on_loss(0.3)
    assert estimate.estimate_bps < 1_000_000


def test_probe_steps_one_track_one_layer_above_the_estimate_after_the_hold() -> None:
    allocator = LayerAllocator(up_hold_s=3)
    tracks = [demand("a", current=0), demand("b", current=0)]
    assert allocator.allocate(0, 400_000, 0, tracks, probe=True)["a"].layer == 0  # hold starts
    decisions = allocator.allocate(3, 400_000, 0, tracks, probe=True)
    assert decisions["a"].layer == 1 and decisions["a"].reason == "up: probe"
    assert decisions["b"].layer == 0, "one track probes at a time"


def test_no_probe_means_no_step_above_the_estimate() -> None:
    allocator = LayerAllocator(up_hold_s=3)
    allocator.allocate(0, 300_000, 0, [demand(current=0)])
    assert allocator.allocate(3, 300_000, 0, [demand(current=0)])["cam"].layer == 0


def _history(estimate: SubscriberEstimate, samples: list[tuple[float, int]], decrease_at: float | None) -> None:
    estimate.history.clear()
    estimate.history.extend(samples)
    estimate.last_decrease_s = decrease_at if decrease_at is not None else -1e9


def test_congestion_is_a_cut_then_a_flat_estimate_well_below_what_is_sent() -> None:
    estimate = SubscriberEstimate()
    _history(estimate, [(0, 900_000), (1, 300_000), (2, 290_000), (3, 280_000), (4, 285_000)], decrease_at=1)
    assert estimate.held_below(675_000, 3.0, now_s=4)


def test_an_estimator_still_ramping_up_is_not_congestion() -> None:
    estimate = SubscriberEstimate()
    _history(estimate, [(0, 150_000), (1, 165_000), (2, 175_000), (3, 190_000), (4, 205_000)], decrease_at=2)
    assert not estimate.held_below(675_000, 3.0, now_s=4)


def test_the_flat_start_of_an_estimator_is_not_congestion() -> None:
    estimate = SubscriberEstimate()
    _history(estimate, [(0, 60_000), (1, 60_000), (2, 60_000), (3, 60_000), (4, 60_000)], decrease_at=None)
    assert not estimate.held_below(75_000, 3.0, now_s=4)


def test_a_collapse_steps_down_to_the_lowest_layer_and_pauses_only_if_that_does_not_fit_either() -> None:
    allocator = LayerAllocator(pause_hold_s=3)
    first = allocator.allocate(0, 100_000, 0, [demand(current=2)])["cam"]
    assert first.layer == 0 and first.reason.startswith("down")
    assert allocator.allocate(0.5, 100_000, 0, [demand(current=0)])["cam"].layer == 0
    assert allocator.allocate(3.6, 100_000, 0, [demand(current=0)])["cam"].layer is None


def test_a_track_without_simulcast_is_never_paused() -> None:
    single = Demand("cam", [Layer(500_000, 640, 360)], current=0, can_pause=False)
    assert LayerAllocator(pause_hold_s=0).allocate(0, 50_000, 0, [single])["cam"].layer == 0


def test_pause_needs_the_lowest_layer_to_be_unaffordable_for_the_whole_hold() -> None:
    allocator = LayerAllocator(pause_hold_s=3)
    assert allocator.allocate(0, 100_000, 0, [demand(current=0)])["cam"].layer == 0  # starved since 0
    assert allocator.allocate(2, 1_000_000, 0, [demand(current=0)])["cam"].layer == 0  # it fits again
    assert allocator.allocate(3.5, 100_000, 0, [demand(current=0)])["cam"].layer == 0  # starved anew
    assert allocator.allocate(6.6, 100_000, 0, [demand(current=0)])["cam"].layer is None


def test_congestion_lasts_while_the_estimate_stays_flat_below_what_is_sent() -> None:
    """Behind a hard cap the receiver cuts once, then reports a flat estimate: still congested."""
    estimate = SubscriberEstimate()
    flat = [(float(t), 30_000) for t in range(0, 10)]
    _history(estimate, [(-1.0, 300_000)] + flat, decrease_at=0)
    assert not estimate.held_below(60_000, 3.0, now_s=9), "the cut is 9 s old: not found congested afresh"
    assert estimate.held_below(60_000, 3.0, now_s=9, already=True), "but congestion found earlier lasts"
    _history(estimate, flat + [(10.0, 45_000), (11.0, 60_000), (12.0, 80_000)], decrease_at=0)
    assert not estimate.held_below(60_000, 3.0, now_s=12, already=True), "a rising estimate ends it"


def test_lasting_loss_is_a_mean_over_the_window_per_stream() -> None:
    estimate = SubscriberEstimate()
    estimate.on_loss(0.0, ssrc=2, now_s=99.0)  # a paused video expects nothing: no loss...
    for t, fraction in ((100.0, 1.0), (101.0, 0.0), (102.0, 1.0), (103.0, 1.0)):  # tail drop: a clean one between
        estimate.on_loss(fraction, ssrc=1, now_s=t)
        estimate.on_loss(0.0, ssrc=2, now_s=t + 0.1)
    assert estimate.lossy_for(3.0, now_s=103.1), "...and does not hide stream 1's loss; one clean report neither"
    assert not estimate.lossy_for(3.0, now_s=100.5), "one report is not a lasting loss"


def test_a_single_lossy_report_does_not_last() -> None:
    estimate = SubscriberEstimate()
    for t, fraction in ((100.0, 0.0), (101.0, 0.4), (102.0, 0.0), (103.0, 0.0), (104.0, 0.0), (105.0, 0.0)):
        estimate.on_loss(fraction, ssrc=1, now_s=t)
    assert not estimate.lossy_for(3.0, now_s=105.0)


def test_a_stream_that_stopped_reporting_is_not_lossy_forever() -> None:
    estimate = SubscriberEstimate()
    for t in (10.5, 11.5, 12.5):
        estimate.on_loss(0.5, ssrc=7, now_s=t)
    assert estimate.lossy_for(2.0, now_s=12.5)
    assert not estimate.lossy_for(2.0, now_s=20.0), "its last report is stale"


def test_only_lasting_loss_lets_the_budget_fall_below_the_lowest_layers() -> None:
    bandwidth = SubscriberBandwidth()
    bandwidth.estimate.estimate_bps = 90_000
    bandwidth.estimate.on_loss(0.3, ssrc=1, now_s=50.0)
    floor = 200_000
    assert bandwidth.budget_bps(200_000, floor, 0.9, now_s=50.5) >= floor / 0.9, "fresh loss: lowest layers kept"
    bandwidth.estimate.on_loss(0.3, ssrc=1, now_s=51.0)
    bandwidth.estimate.on_loss(0.3, ssrc=1, now_s=52.1)
    budget = bandwidth.budget_bps(200_000, floor, 0.9, now_s=52.1)
    assert budget == bandwidth.estimate.estimate_bps < floor, "lasting loss: the (cut) estimate rules"


def test_packets_that_never_reached_the_receiver_count_as_lost() -> None:
    lost, mark = undelivered(None, sent_seq=100, highest_seq=90, cumulative_lost=0)
    assert lost == 0.0, "the first report only sets the mark"
    lost, mark = undelivered(mark, sent_seq=150, highest_seq=92, cumulative_lost=0)  # 50 sent, 2 arrived
    assert lost == 0.96
    # a late packet moved its highest sequence number 46 on, but it counted 40 of those lost
    lost, mark = undelivered(mark, sent_seq=200, highest_seq=138, cumulative_lost=40)
    assert lost == 0.88
    lost, mark = undelivered(mark, sent_seq=250, highest_seq=181, cumulative_lost=40)  # 43 arrived, 7 queued
    assert lost == 0.0, "a small shortfall is left to the receiver's own loss count"
    lost, _ = undelivered((65530, 65520, 0), sent_seq=44, highest_seq=65525, cumulative_lost=0)  # across the wrap
    assert lost == 0.9
    assert undelivered(mark, sent_seq=255, highest_seq=181, cumulative_lost=40)[0] == 0.0, "too few sent to tell"


def test_an_uncongested_subscriber_keeps_its_layers_whatever_the_rounding() -> None:
    """The budget 'at least what is allocated' must let the allocator keep exactly that."""
    bandwidth = SubscriberBandwidth()
    bandwidth.estimate.estimate_bps = 100_000  # a receiver's estimate still ramping up
    for top in (593_142.1, 612_345.67, 700_000.3, 455_361.9):
        audio = 96_123.7
        layers = [Layer(100_000.3), Layer(301_234.9), Layer(top)]
        allocated = top + audio
        budget = bandwidth.budget_bps(allocated, audio + 100_000.3, 0.9, now_s=1.0)
        decision = LayerAllocator().allocate(0, budget, audio, [Demand("cam", layers, current=2)])["cam"]
        assert decision.layer == 2, (top, decision)
