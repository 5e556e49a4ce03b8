"""Monitoring: the event stream, detectors, alerts (:mod:`.service`) and posture."""

from tether.monitor.events import Event, EventStream, Subscription

__all__ = ["Event", "EventStream", "Subscription"]
