"""Monitoring: the event stream (detectors, alerts and posture come with issue 10)."""

from tether.monitor.events import Event, EventStream, Subscription

__all__ = ["Event", "EventStream", "Subscription"]
