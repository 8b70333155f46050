"""LayerAllocator: for one subscriber, which simulcast layer of each video track to forward,
given its bandwidth estimate, its requested maximum resolutions and each track's priority.
Pure decisions over numbers; docs/allocation.md explains the rules and their reasons."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

UP_HOLD_S = 3.0  # an up-switch waits until the estimate has allowed it this long
PAUSE_HOLD_S = 3.0  # a pause waits until not even the lowest layer has fitted for this long
HEADROOM = 0.9  # plan for 90 % of the estimate: REMB overshoots, and RTX and RTCP need room


@dataclass
class Layer:
    bitrate_bps: float
    width: int = 0  # 0: not known yet (no key frame seen)
    height: int = 0
    available: bool = True  # the publisher sends it


@dataclass
class Demand:
    """One video track as one subscriber receives it."""

    key: Hashable
    layers: list[Layer]  # low to high
    current: int | None  # the layer forwarded now; None: paused or not started
    started: bool = True  # False until the first decision: a new track starts without a hold
    priority: int = 0  # higher is served first: screen share 2, active speaker 1, others 0
    max_width: int | None = None
    max_height: int | None = None
    max_layer: int | None = None
    can_pause: bool = True  # False: keep its lowest layer whatever the budget (no lower step to try)


@dataclass
class Decision:
    layer: int | None  # None: pause the video (audio is never paused)
    reason: str


@dataclass
class LayerAllocator:
    up_hold_s: float = UP_HOLD_S
    pause_hold_s: float = PAUSE_HOLD_S
    headroom: float = HEADROOM
    _up_since: dict[Hashable, float] = field(default_factory=dict)
    _starved_since: dict[Hashable, float] = field(default_factory=dict)

    def allocate(self, now_s: float, estimate_bps: float, fixed_bps: float,
                 demands: list[Demand], probe: bool = False) -> dict[Hashable, Decision]:
        """`fixed_bps`: what the subscriber receives that is never reduced (audio). `probe`: the
        estimate is only bounded by what the subscriber receives now (a receiver-side estimate
        cannot exceed ~1.5x its incoming rate), so one track may step one layer above what the
        estimate affords; if the link cannot carry it, the estimate falls and it comes back down."""
        budget = estimate_bps * self.headroom - fixed_bps
        ordered = sorted(demands, key=lambda d: -d.priority)
        affordable: dict[Hashable, int | None] = {}
        for demand in ordered:  # every track its lowest layer first, in priority order
            lowest = self._lowest(demand)
            if lowest is not None and (demand.layers[lowest].bitrate_bps <= budget or not demand.can_pause):
                affordable[demand.key] = lowest
                budget -= demand.layers[lowest].bitrate_bps
            else:
                affordable[demand.key] = None
        for demand in ordered:  # then upgrades, in the same order
            chosen = affordable[demand.key]
            if chosen is None:
                continue
            for index in range(self._ceiling(demand), chosen, -1):
                extra = demand.layers[index].bitrate_bps - demand.layers[chosen].bitrate_bps
                if demand.layers[index].available and extra <= budget:
                    affordable[demand.key] = index
                    budget -= extra
                    break
        probed: Hashable | None = None
        if probe:  # one step for one track: resume the first paused one, else raise one layer
            for demand in ordered:
                chosen = affordable[demand.key]
                if chosen is None and demand.current is None and demand.started:
                    affordable[demand.key] = self._lowest(demand)
                elif chosen is not None and chosen == demand.current and chosen < self._ceiling(demand) \
                        and demand.layers[chosen + 1].available:
                    affordable[demand.key] = chosen + 1
                else:
                    continue
                probed = demand.key
                break
        decisions = {d.key: self._hysteresis(now_s, d, affordable[d.key]) for d in demands}
        if probed is not None and decisions[probed].reason in ("up: bandwidth", "resumed"):
            decisions[probed].reason = "up: probe" if demands_current(demands, probed) is not None else "resumed: probe"
        for held in (self._up_since, self._starved_since):
            for key in list(held):
                if key not in decisions:
                    del held[key]
        return decisions

    def _hysteresis(self, now_s: float, demand: Demand, wanted: int | None) -> Decision:
        current = demand.current
        lowest = self._lowest(demand)
        if wanted is not None or current is None or current != lowest:
            self._starved_since.pop(demand.key, None)
        if not demand.started:
            self._up_since.pop(demand.key, None)
            return Decision(wanted, "initial" if wanted is not None else "paused: bandwidth")
        if wanted is None:
            self._up_since.pop(demand.key, None)
            if current is not None and lowest is not None and current > lowest:
                # never straight from a higher layer to paused: the estimate right after an overload is
                # pessimistic; the lowest layer first, and pause only if the link cannot carry even that
                return Decision(lowest, "down: bandwidth")
            if current is not None and now_s - self._starved_since.setdefault(demand.key, now_s) < self.pause_hold_s:
                return Decision(current, "hold: lowest")
            return Decision(None, "paused: bandwidth")
        if current is not None and wanted <= current:
            self._up_since.pop(demand.key, None)
            if wanted == current:
                return Decision(current, "steady")
            reason = "resolution" if wanted == self._ceiling(demand) and self._ceiling(demand) < current \
                else "bandwidth"
            return Decision(wanted, f"down: {reason}")
        since = self._up_since.setdefault(demand.key, now_s)
        if now_s - since < self.up_hold_s:
            return Decision(current, "hold")
        self._up_since.pop(demand.key, None)
        return Decision(wanted, "resumed" if current is None else "up: bandwidth")

    @staticmethod
    def _ceiling(demand: Demand) -> int:
        """The highest layer the subscriber asked for (size limits, explicit layer)."""
        top = len(demand.layers) - 1
        if demand.max_layer is not None:
            top = min(top, max(0, demand.max_layer))
        for index in range(top, 0, -1):
            layer = demand.layers[index]
            too_wide = demand.max_width is not None and layer.width > demand.max_width
            too_high = demand.max_height is not None and layer.height > demand.max_height
            if layer.available and not too_wide and not too_high:
                return index
        return 0

    @staticmethod
    def _lowest(demand: Demand) -> int | None:
        return next((i for i, layer in enumerate(demand.layers) if layer.available), None)


def demands_current(demands: list[Demand], key: Hashable) -> int | None:
    return next((d.current for d in demands if d.key == key), None)
