"""Closing a handle while another thread (or the call's own progress callback) is inside a libsam3d
call on it: the call finishes, the C free comes once and only after it has returned, and later calls
raise ValueError. libsam3d is wrapped so that the tests see the order of its calls and frees."""
import os
import threading

import numpy as np
import pytest

import sam3d

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "models", "tiny-orient")
WAIT = 60.0   # seconds: only reached when something hangs


class Spy:
    """libsam3d with its handle frees and the calls in `watch` logged in order, from any thread;
    a call named in `gates` waits, once entered, until its gate opens (before running)."""

    def __init__(self, lib, watch=()):
        self._lib, self._watch = lib, set(watch)
        self.events = []                 # (function name, "enter" | "return" | handle address)
        self.gates = {}                  # function name -> (entered, go) events

    def __getattr__(self, name):
        f = getattr(self._lib, name)
        if name.endswith("_free"):
            def free(h):
                self.events.append((name, getattr(h, "value", h)))
                f(h)
            return free
        if name in self._watch:
            def call(*args):
                self.events.append((name, "enter"))
                if name in self.gates:
                    entered, go = self.gates[name]
                    entered.set()
                    go.wait(WAIT)
                try:
                    return f(*args)
                finally:
                    self.events.append((name, "return"))
            return call
        return f

    @staticmethod
    def key(handle):
        """What the log holds for `handle`'s C free: taken while it is open."""
        assert handle._h.value
        return handle._free, handle._h.value

    def frees(self, key):
        """Where the log has that free (other tests' handles may be collected meanwhile)."""
        return [i for i, e in enumerate(self.events) if e == key]

    def returned(self, name):
        return self.events.index((name, "return"))


@pytest.fixture
def spy(monkeypatch):
    s = Spy(sam3d.library(), watch=("sam3d_session_click", "sam3d_model_warm_up"))
    monkeypatch.setattr(sam3d, "_lib", s)
    return s


@pytest.fixture(scope="module")
def rt():
    return sam3d.Runtime()


def _noise():
    return np.random.default_rng(0).normal(0, 50, (40, 40, 40)).astype(np.float32)


def _blocking_progress():
    """A progress callback that, at the encoder's start, says so and waits for `go`: the click is
    then inside libsam3d for as long as the test wants."""
    inside, go = threading.Event(), threading.Event()

    def progress(stage, done):
        if stage == "encode" and not done:
            inside.set()
            go.wait(WAIT)
    return progress, inside, go


def _click_on_thread(s, obj):
    out = {}

    def run():
        try:
            out["result"] = s.click(obj, (20, 20, 20))
        except sam3d.Error as e:   # a clean error is allowed; a crash or anything else is not
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_session_closed_by_another_thread_while_a_click_runs(rt, spy):
    model = sam3d.Model(rt, TINY, threads=1)
    progress, inside, go = _blocking_progress()
    s = sam3d.Session(model, sam3d.Volume.from_array(_noise(), spacing=(2.0, 2.0, 2.0)), progress=progress)
    obj = s.add_object()
    freed = Spy.key(s)
    t, out = _click_on_thread(s, obj)
    try:
        assert inside.wait(WAIT)
        closer = threading.Thread(target=s.close)
        closer.start()
        closer.join(WAIT)
        assert not closer.is_alive()          # close() does not wait for the click
        assert spy.frees(freed) == [], "the session was freed under its running click"
        with pytest.raises(ValueError, match="Session is closed"):
            s.add_object()
    finally:
        go.set()
        t.join(WAIT)
    assert not t.is_alive()
    assert "error" in out or out["result"].voxels > 0, out
    frees = spy.frees(freed)
    assert len(frees) == 1 and frees[0] > spy.returned("sam3d_session_click"), spy.events
    with pytest.raises(ValueError, match="Session is closed"):
        s.click(obj, (20, 20, 20))
    s.close()
    del s
    assert len(spy.frees(freed)) == 1


def test_session_closed_from_its_own_progress_callback(rt, spy):
    model = sam3d.Model(rt, TINY, threads=1)
    closed_in = []

    def progress(stage, done):
        if stage == "decode" and done and not closed_in:
            closed_in.append(stage)
            s.close()                         # re-entrant: must neither free nor deadlock here

    s = sam3d.Session(model, sam3d.Volume.from_array(_noise(), spacing=(2.0, 2.0, 2.0)), progress=progress)
    obj = s.add_object()
    freed = Spy.key(s)
    r = s.click(obj, (20, 20, 20))
    assert closed_in and r.voxels > 0
    frees = spy.frees(freed)
    assert len(frees) == 1 and frees[0] > spy.returned("sam3d_session_click"), spy.events
    with pytest.raises(ValueError, match="Session is closed"):
        s.mask(obj)


def test_model_and_volume_closed_while_a_session_click_runs(rt, spy):
    """A session keeps its model and volume: closing them under a running click frees them after
    it, and the session goes on working."""
    model = sam3d.Model(rt, TINY, threads=1)
    vol = sam3d.Volume.from_array(_noise(), spacing=(2.0, 2.0, 2.0))
    progress, inside, go = _blocking_progress()
    s = sam3d.Session(model, vol, progress=progress)
    obj = s.add_object()
    model_freed, vol_freed = Spy.key(model), Spy.key(vol)
    t, out = _click_on_thread(s, obj)
    try:
        assert inside.wait(WAIT)
        closer = threading.Thread(target=lambda: (model.close(), vol.close()))
        closer.start()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert spy.frees(model_freed) == [] and spy.frees(vol_freed) == [], spy.events
        with pytest.raises(ValueError, match="Model is closed"):
            model.info
        with pytest.raises(ValueError, match="Volume is closed"):
            vol.geometry
    finally:
        go.set()
        t.join(WAIT)
    assert not t.is_alive()
    assert out["result"].voxels > 0, out
    clicked = spy.returned("sam3d_session_click")
    for key in (model_freed, vol_freed):
        frees = spy.frees(key)
        assert len(frees) == 1 and frees[0] > clicked, (key, spy.events)
    s.set_progress(None)
    assert s.mask(obj).sum() == out["result"].voxels
    assert s.click(s.add_object(), (10, 10, 10)).voxels > 0
    s.close()
    model.close()
    vol.close()
    assert len(spy.frees(model_freed)) == 1 and len(spy.frees(vol_freed)) == 1


def test_model_closed_while_it_warms_up(rt, spy):
    model = sam3d.Model(rt, TINY, threads=1)
    freed = Spy.key(model)
    entered, go = threading.Event(), threading.Event()
    spy.gates["sam3d_model_warm_up"] = (entered, go)
    out = []

    def warm():
        try:
            model.warm_up()
            out.append("finished")
        except sam3d.Error as e:
            out.append(e.name)
    t = threading.Thread(target=warm)
    t.start()
    try:
        assert entered.wait(WAIT)
        model.close()                         # from the main thread: returns, the free waits
        assert spy.frees(freed) == [], "the model was freed under its running warm-up"
        with pytest.raises(ValueError, match="Model is closed"):
            model.cancel_warm_up()
    finally:
        go.set()
        t.join(WAIT)
    assert not t.is_alive() and out in (["finished"], ["SAM3D_STATUS_CANCELLED"]), out
    frees = spy.frees(freed)
    assert len(frees) == 1 and frees[0] > spy.returned("sam3d_model_warm_up"), spy.events


def test_busy_status_has_a_name_even_from_an_older_library(monkeypatch):
    lib = sam3d.library()
    for status in (0, 1, 2, 11, 12, 14, 15, 99):
        assert sam3d.Error(status, "").name == lib.sam3d_status_name(status).decode()

    class Older:
        """libsam3d from before SAM3D_STATUS_BUSY: no name for 16."""
        def __getattr__(self, name):
            return getattr(lib, name)

        @staticmethod
        def sam3d_status_name(status):
            return b"?" if status >= 16 and status != 99 else lib.sam3d_status_name(status)

    for library in (lib, Older()):
        monkeypatch.setattr(sam3d, "_lib", library)
        e = sam3d.Error(16, "the session is in use by another call")
        assert e.status == 16 and e.name == "SAM3D_STATUS_BUSY" and str(e).startswith("SAM3D_STATUS_BUSY: ")
        assert sam3d.Error(12345, "").name == "?"


def test_progress_callback_replaced_while_a_click_runs(rt):
    """A running click uses the callback it started with: replacing it meanwhile is refused with
    BUSY (the old one stays alive, even through garbage collection) and the click goes on."""
    import gc
    model = sam3d.Model(rt, TINY, threads=1)
    progress, inside, go = _blocking_progress()
    stages = []

    def logged(stage, done):
        stages.append((stage, done))
        progress(stage, done)
    s = sam3d.Session(model, sam3d.Volume.from_array(_noise(), spacing=(2.0, 2.0, 2.0)), progress=logged)
    obj = s.add_object()
    t, out = _click_on_thread(s, obj)
    try:
        assert inside.wait(WAIT)
        with pytest.raises(sam3d.Error) as e:
            s.set_progress(None)
        assert e.value.name == "SAM3D_STATUS_BUSY"
        gc.collect()
    finally:
        go.set()
        t.join(WAIT)
    assert not t.is_alive() and out["result"].voxels > 0, out
    assert ("encode", True) in stages       # the old callback went on to the click's end
    s.set_progress(None)                    # once the click is over, replacing works
    s.close()
