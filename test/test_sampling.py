"""Frame sampler, latest-frame slot, accounting, latency and rate meters (no ROS)."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from road_seg_perception.core.sampling import (
    FrameSampler,
    FrameScheduler,
    LatencyTracker,
    LatestSlot,
    RateMeter,
    stale_status,
)


def test_every_n():
    s = FrameSampler(process_every_n=3)
    picks = [i for i in range(30) if s.accept(i * 0.01)]
    assert picks == list(range(0, 30, 3))


def test_every_one_accepts_all():
    s = FrameSampler()
    assert all(s.accept(i * 0.001) for i in range(100))


def test_max_rate_from_a_30hz_camera_with_jitter():
    s = FrameSampler(max_rate_hz=10.0)
    times = [i / 30.0 + (0.004 if i % 2 else -0.004) for i in range(300)]  # 10 s of jittery 30 Hz
    accepted = [t for t in times if s.accept(t)]
    assert 98 <= len(accepted) <= 101  # ~10 Hz, not 7.5 Hz as a naive "now - last >= period" gives
    gaps = [b - a for a, b in zip(accepted, accepted[1:], strict=False)]
    assert min(gaps) > 0.05


def test_max_rate_builds_no_credit_after_a_pause():
    s = FrameSampler(max_rate_hz=10.0)
    assert s.accept(0.0)
    assert not s.accept(0.05)
    # 5 s pause, then a 100 Hz burst: only one frame per 0.1 s, no catch-up burst
    burst = [5.0 + i * 0.01 for i in range(50)]
    assert sum(s.accept(t) for t in burst) == 5


def test_every_n_and_rate_combined():
    s = FrameSampler(process_every_n=2, max_rate_hz=5.0)
    accepted = [i for i in range(60) if s.accept(i / 30.0)]  # 2 s at 30 Hz
    assert all(i % 2 == 0 for i in accepted)
    assert 9 <= len(accepted) <= 11


@pytest.mark.parametrize("n,rate", [(0, 0.0), (-1, 0.0), (1.5, 0.0), (True, 0.0), (1, -1.0),
                                    (1, float("nan")), (1, float("inf"))])
def test_invalid_settings_are_refused(n, rate):
    with pytest.raises(ValueError):
        FrameSampler(n, rate)
    s = FrameSampler(2, 1.0)
    with pytest.raises(ValueError):
        s.configure(n, rate)
    assert (s.process_every_n, s.max_rate_hz) == (2, 1.0)  # unchanged after a refused change


def test_configure_restarts_the_count():
    s = FrameSampler(process_every_n=4)
    assert s.accept(0.0) and not s.accept(0.1)
    s.configure(process_every_n=2)
    assert [s.accept(t) for t in (0.2, 0.3, 0.4)] == [True, False, True]


def test_slot_keeps_only_the_latest():
    slot = LatestSlot()
    assert slot.put("a") is False
    assert slot.put("b") is True  # "a" was replaced, never taken
    assert slot.take(0) == "b"
    assert slot.take(0.01) is None


def test_slot_wakes_a_waiting_consumer_and_close():
    slot = LatestSlot()
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    t.start()
    time.sleep(0.05)
    slot.put(42)
    t.join(2.0)
    assert got == [42]
    t = threading.Thread(target=lambda: got.append(slot.take(10.0)))
    t.start()
    slot.close()
    t.join(2.0)
    assert not t.is_alive() and got == [42, None]


def test_scheduler_accounting_single_thread():
    sch = FrameScheduler(FrameSampler(process_every_n=2))
    assert sch.offer("f0", 0.0) == "queued"
    assert sch.offer("f1", 0.1) == "skipped"
    assert sch.offer("f2", 0.2) == "queued_replacing"  # f0 dropped as stale
    sch.reject_bad()
    c = sch.counts()
    assert (c.received, c.skipped, c.dropped, c.bad, c.pending, c.processed) == (4, 1, 1, 1, 1, 0)
    assert sch.take(0) == "f2"
    sch.finish(ok=True)
    c = sch.counts()
    assert c.pending == 0 and c.processed == 1 and c.received == c.settled == 4


def test_scheduler_accounting_under_concurrency():
    """Producers faster than a slow consumer: every frame is exactly one category; nothing queues."""
    sch = FrameScheduler(FrameSampler(process_every_n=1))
    stop = threading.Event()
    taken: list[int] = []

    def consumer():
        while not stop.is_set() or sch.counts().pending:
            f = sch.take(0.01)
            if f is None:
                continue
            taken.append(f)
            time.sleep(0.002)
            sch.finish(ok=f % 7 != 0)

    def producer(base: int):
        for i in range(500):
            if i % 50 == 0:
                sch.reject_bad()
            else:
                sch.offer(base + i)

    c_thread = threading.Thread(target=consumer)
    c_thread.start()
    producers = [threading.Thread(target=producer, args=(k * 1000,)) for k in range(3)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    stop.set()
    c_thread.join(10)
    c = sch.counts()
    assert c.received == 1500 and c.pending == 0
    assert c.received == c.processed + c.skipped + c.dropped + c.bad
    assert c.processed + (c.bad - 30) == len(taken)  # 30 rejected by validation, the rest failed in the worker
    assert c.dropped > 0 and len(set(taken)) == len(taken)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.sampled_from(["offer", "bad", "take_ok", "take_fail"]), max_size=80),
       n=st.integers(1, 5), rate=st.sampled_from([0.0, 5.0, 50.0]))
def test_accounting_invariant_property(ops, n, rate):
    sch = FrameScheduler(FrameSampler(n, rate))
    t = 0.0
    for op in ops:
        t += 0.013
        if op == "offer":
            sch.offer(object(), t)
        elif op == "bad":
            sch.reject_bad()
        elif sch.take(0) is not None:
            sch.finish(ok=op == "take_ok")
        c = sch.counts()
        assert c.received == c.settled + c.pending
        assert 0 <= c.pending <= 1


def test_latency_percentiles():
    lat = LatencyTracker(window=100)
    assert lat.percentile(50) is None
    for v in range(1, 101):
        lat.add(v / 1000.0)
    assert lat.percentile(50) == pytest.approx(0.050)
    assert lat.percentile(95) == pytest.approx(0.095)
    assert lat.percentile(100) == pytest.approx(0.100)
    for _ in range(100):
        lat.add(1.0)  # the window forgets old values
    assert lat.percentile(50) == 1.0 and len(lat) == 100


def test_rate_meter():
    now = [100.0]
    rm = RateMeter(window_s=2.0, clock=lambda: now[0])
    for i in range(40):
        rm.tick(100.0 + i * 0.05)  # 20 Hz for 2 s
    now[0] = 102.0
    assert rm.rate() == pytest.approx(20.0, abs=0.6)
    now[0] = 105.0
    assert rm.rate() == 0.0
    fresh = RateMeter(window_s=2.0, clock=lambda: now[0])
    for i in range(5):
        fresh.tick(105.0 + i * 0.1)
    assert fresh.rate(105.5) == pytest.approx(10.0)  # measured over the 0.5 s since start


def test_stale_status():
    assert stale_status(10.0, None, 9.0, 2.0) == (False, 1.0)
    assert stale_status(12.5, None, 9.0, 2.0)[0] is True
    assert stale_status(12.5, 12.0, 9.0, 2.0) == (False, 0.5)
    assert stale_status(15.0, 12.0, 9.0, 2.0) == (True, 3.0)
