"""Sessions held for remote clients: what the Triton model (serve/triton) runs, without Triton.

`SessionTable.handle` takes one request of the protocol in `sam3d.wire` (its tensors as numpy arrays,
batch dimension removed) and returns the reply's tensors. It never raises: a failure of the library
is replied with its status name and message, a malformed request with SAM3D_STATUS_INVALID_ARGUMENT,
anything unforeseen with SAM3D_STATUS_INTERNAL, so one client cannot take the server's process down.
Sessions end at END, at a new START on the same correlation ID, and after `idle_timeout` seconds
without a request, failed ones included (`reap`, run by `Reaper`), which matches Triton's own
sequence idle timeout, so a client that vanishes leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from . import Error, EmptyMaskWarning, Geometry, Model, Result, Runtime, Session, Volume, set_memory_budget
from . import wire

_INVALID = "SAM3D_STATUS_INVALID_ARGUMENT"
_COORDS = ("ijk", "lps", "ras")


class _Refused(Exception):
    """A request refused before the library saw it: (status name, message)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Entry:
    session: Session
    volume: Volume
    dims: tuple
    last_used: float = field(default_factory=time.monotonic)
    # requests that changed the session (mask ops, add_object, set_inference): a client that lost
    # an answer on the network compares it with its own count to learn whether the call took effect
    applied: int = 0
    objects: int = 0

    @property
    def voxels(self) -> int:
        return self.dims[0] * self.dims[1] * self.dims[2]


def _text(req: dict, name: str, default: Optional[str] = None) -> Optional[str]:
    v = req.get(name)
    if v is None or np.asarray(v).size == 0:
        return default
    x = np.asarray(v).ravel()[0]
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else str(x)


def _need(req: dict, name: str, op: str) -> np.ndarray:
    v = req.get(name)
    if v is None:
        raise _Refused(_INVALID, f"{op} needs the input {name}")
    return np.asarray(v)


def _object(req: dict, op: str) -> int:
    v = _need(req, "OBJECT", op).ravel()
    if v.size != 1:
        raise _Refused(_INVALID, f"OBJECT holds {v.size} values, not 1")
    try:
        obj = int(v[0])
    except (TypeError, ValueError):
        raise _Refused(_INVALID, f"OBJECT {v[0]!r} is not a whole number")
    if not 0 <= obj < 2 ** 32:
        raise _Refused(_INVALID, f"OBJECT {obj} is not an object ID (0 .. 2^32 - 1)")
    return obj


def _nifti_dims(data: bytes) -> Optional[tuple]:
    """The dims a NIfTI-1 header declares (either byte order, gzip or not), read before anything is
    decoded; None when the header is not one (the library then says what is wrong)."""
    try:
        head = bytes(data[:4096])
        if head[:2] == b"\x1f\x8b":
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bytes(data[:1 << 16]), 348)
        for order in "<>":
            if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
                dim = struct.unpack(order + "8h", head[40:56])
                n = dim[0] if 1 <= dim[0] <= 7 else 3
                return tuple(max(1, int(d)) for d in dim[1:1 + n])
    except (zlib.error, struct.error):
        pass
    return None


def _coord(req: dict) -> str:
    c = _text(req, "COORD", "ijk").lower()
    if c not in _COORDS:
        raise _Refused(_INVALID, f"COORD {c!r}: one of {', '.join(_COORDS)}")
    return c


def _points(req: dict, op: str, n: int) -> np.ndarray:
    p = _need(req, "POINT", op).astype(float).ravel()
    if p.size != n:
        raise _Refused(_INVALID, f"{op} needs {n} values in POINT, got {p.size}")
    return p


class SessionTable:
    """Live sessions by correlation ID, for one model in one process (one Triton model instance)."""

    def __init__(self, model: Model, *, max_sessions: int = 16, idle_timeout: float = 600.0, name: str = "sam3d",
                 max_voxels: int = 1 << 29):
        if max_sessions < 1:
            raise ValueError(f"max_sessions {max_sessions}: at least 1")
        self.model, self.max_sessions, self.idle_timeout, self.name = model, int(max_sessions), float(idle_timeout), name
        self.max_voxels = int(max_voxels)
        # what every start and info reply says of the model: fixed once it is open
        info = model.info
        self._model_facts = {"prompts": sorted(model.prompts),
                             "model": {"name": name, "package": info.get("name"), "provider": info.get("provider")}}
        self._sessions: Dict[object, _Entry] = {}
        self._lock = threading.RLock()
        _remove_stale_folders()
        self._tmp = tempfile.mkdtemp(prefix=f"sam3d-serve-{os.getpid()}-")

    def __len__(self):
        with self._lock:
            return len(self._sessions)

    # -- requests ---------------------------------------------------------------------------------

    def handle(self, cid, start: bool, end: bool, req: dict) -> dict:
        """One request of correlation ID `cid` (an int or a string, as Triton has it; START and END
        flags): the reply's tensors."""
        with self._lock:
            op = "?"
            reply = {"info": {}}
            entry = None
            try:
                op = (_text(req, "OP") or "").lower()
                if op not in wire.OPS:
                    raise _Refused(_INVALID, f"OP {op!r}: one of {', '.join(wire.OPS)}")
                if start:
                    self._start(cid, req, reply)
                entry = self._sessions.get(cid)
                if entry is None:
                    raise _Refused(_INVALID, f"no session for correlation ID {cid}: START one (with the volume) "
                                             "first; sessions end at END and after "
                                             f"{self.idle_timeout:g} s without a request")
                self._run(op, entry, req, reply)
                if op in wire.MASK_OPS + ("add_object", "set_inference"):
                    entry.applied += 1
                status, message = wire.OK, ""
            except Error as e:
                status, message = e.name, e.message
            except _Refused as e:
                status, message = e.status, e.message
            except Exception as e:  # never let one request take the instance down
                status, message = "SAM3D_STATUS_INTERNAL", f"{type(e).__name__}: {e}"
            if entry is not None:
                # a failed request is activity too: Triton keeps the sequence, so the session stays
                entry.last_used = time.monotonic()
                reply["info"].update(applied=entry.applied, objects=entry.objects)
            if end:
                self._drop(cid)
            if status != wire.OK:
                reply.pop("result", None)
                reply.pop("patch", None)
            reply["info"].update(live_sessions=len(self._sessions), pid=os.getpid(), op=op)
            return self._tensors(status, message, reply)

    def _start(self, cid, req: dict, reply: dict):
        self._drop(cid)
        self.reap()
        if len(self._sessions) >= self.max_sessions:
            raise _Refused("SAM3D_STATUS_BUSY",
                           f"this server instance holds its maximum of {self.max_sessions} live sessions; "
                           "END one, or retry when one has ended or gone idle")
        data = _need(req, "VOLUME", "start").ravel()
        if data.size != 1:
            raise _Refused(_INVALID, f"VOLUME holds {data.size} elements, not 1")
        data = data[0]
        if not isinstance(data, (bytes, bytearray)):
            raise _Refused(_INVALID, "VOLUME holds no bytes")
        dtype = _text(req, "VOLUME_DTYPE", "")
        volume = self._raw_volume(data, dtype, req) if dtype else self._nifti_volume(data)
        session = Session(self.model, volume)
        self._sessions[cid] = _Entry(session, volume, tuple(volume.geometry.dims))
        reply["info"].update(self._describe(self._sessions[cid]))

    def _raw_volume(self, data: bytes, dtype: str, req: dict) -> Volume:
        if dtype not in wire.RAW_DTYPES:
            raise _Refused(_INVALID, f"VOLUME_DTYPE {dtype!r}: one of {', '.join(wire.RAW_DTYPES)}")
        try:
            dims, spacing, origin, direction = wire.split_geometry(_need(req, "GEOMETRY", "start with raw voxels"))
        except ValueError as e:
            raise _Refused(_INVALID, str(e))
        self._check_voxels(dims)
        dt = np.dtype(dtype).newbyteorder("<")
        need = int(np.prod(dims, dtype=object)) * dt.itemsize
        if len(data) != need:
            raise _Refused(_INVALID, f"VOLUME holds {len(data)} bytes; dims {dims} of {dtype} need {need}")
        array = np.frombuffer(data, dt).reshape(dims, order="F")
        return Volume.from_array(array, geometry=Geometry(dims, spacing, origin, direction))

    def _check_voxels(self, dims):
        """Refuse a volume that would take the instance's live voxels past `max_voxels`: the memory
        budget bounds one array, this bounds what all sessions hold (a small .nii.gz may declare a
        huge volume)."""
        n = int(np.prod([int(d) for d in dims], dtype=object))
        held = sum(e.voxels for e in self._sessions.values())
        if held + n > self.max_voxels:
            raise _Refused("SAM3D_STATUS_TOO_LARGE",
                           f"a volume of {n} voxels ({'x'.join(str(int(d)) for d in dims)}) with the {held} this "
                           f"instance's sessions hold exceeds its max_voxels of {self.max_voxels}")

    def _nifti_volume(self, data: bytes) -> Volume:
        dims = _nifti_dims(data)
        if dims is not None:
            self._check_voxels(dims[:3])
        suffix = ".nii.gz" if bytes(data[:2]) == b"\x1f\x8b" else ".nii"
        fd, path = tempfile.mkstemp(suffix=suffix, dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return Volume.read_nifti(path)
        except Error as e:   # the message names the server's temporary file: name the upload instead
            raise Error(e.status, e.message.replace(path, "the uploaded VOLUME"), name=e.name) from None
        finally:
            os.unlink(path)

    def _describe(self, entry: _Entry) -> dict:
        g = entry.volume.geometry
        flips, keep = entry.session.inference
        return {"dims": list(g.dims), "spacing": list(g.spacing), "origin": list(g.origin),
                "direction": np.asarray(g.direction).reshape(9).tolist(), **self._model_facts,
                "inference": {"test_time_flips": flips, "keep_clicked_components": keep,
                              "zoom_out": entry.session.zoom_out},
                "idle_timeout": self.idle_timeout}

    def _run(self, op: str, entry: _Entry, req: dict, reply: dict):
        s = entry.session
        if op in wire.MASK_OPS:
            obj = _object(req, op)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EmptyMaskWarning)
                r = self._mask_op(op, s, obj, entry, req)
            reply["result"] = r
            reply["patch"] = self._mask_box(entry, obj, r.changed_lo, r.changed_hi)
        elif op == "add_object":
            reply["info"]["object"] = s.add_object()
            entry.objects += 1
        elif op == "set_inference":
            v = _need(req, "SETTINGS", op).astype(np.int64).ravel()
            if v.size != 3:
                raise _Refused(_INVALID, f"SETTINGS holds {v.size} values, not 3 (flips, keep, zoom-out)")
            if (v < 0).any() or (v >= 2 ** 32).any():
                raise _Refused(_INVALID, f"SETTINGS {v.tolist()}: flips, keep and zoom-out are not negative")
            s.set_inference(int(v[0]), bool(v[1]), int(v[2]) if v[2] else None)
            reply["info"].update(self._describe(entry))
        elif op == "get_mask":
            obj = _object(req, op)
            reply["patch"] = self._mask_box(entry, obj)
            voxels = int(np.unpackbits(reply["patch"]).sum(dtype=np.int64))
            reply["result"] = Result(voxels, (0, 0, 0), tuple(entry.dims), False, 0.0)
        elif op == "get_mask_nifti":
            obj = _object(req, op)
            fd, path = tempfile.mkstemp(suffix=".nii.gz", dir=self._tmp)
            os.close(fd)
            try:
                s.write_mask(obj, path)
                with open(path, "rb") as f:
                    reply["patch"] = np.frombuffer(f.read(), np.uint8)
            except Error as e:   # not the server's temporary path
                raise Error(e.status, e.message.replace(path, "the mask file"), name=e.name) from None
            finally:
                if os.path.exists(path):
                    os.unlink(path)
        elif op in ("info", "start"):
            reply["info"].update(self._describe(entry))
        # "end": nothing to do beyond the END flag

    @staticmethod
    def _mask_box(entry: _Entry, obj: int, lo=(0, 0, 0), hi=None) -> np.ndarray:
        """The object's mask inside [lo, hi) as packed bits: only the box leaves the library (a
        whole-volume copy per click would cost as much as the click on a large CT)."""
        hi = entry.dims if hi is None else hi
        if 0 in wire.box_shape(lo, hi):
            return np.zeros(0, np.uint8)
        return wire.pack(entry.session.mask_box(obj, lo, hi))

    @staticmethod
    def _mask_op(op: str, s: Session, obj: int, entry: _Entry, req: dict) -> Result:
        if op == "click":
            pos = req.get("POSITIVE")
            positive = True if pos is None or np.asarray(pos).size == 0 else bool(np.asarray(pos).ravel()[0])
            return s.click(obj, _points(req, op, 3), coord=_coord(req), positive=positive)
        if op == "set_box":
            p = _points(req, op, 6)
            return s.set_box(obj, p[:3], p[3:], coord=_coord(req))
        if op == "set_mask":
            mask = np.zeros(entry.dims, np.uint8)
            try:
                wire.unpack_into(mask, (0, 0, 0), entry.dims, _need(req, "MASK", op))
            except ValueError as e:
                raise _Refused(_INVALID, f"MASK: {e}")
            return s.set_mask(obj, mask)
        return s.undo(obj) if op == "undo" else s.redo(obj)

    @staticmethod
    def _tensors(status: str, message: str, reply: dict) -> dict:
        r: Optional[Result] = reply.get("result")
        res = np.zeros(8, np.int64)
        zoom = 0.0
        if r is not None:
            res[:] = [r.voxels, *r.changed_lo, *r.changed_hi, int(r.encoded)]
            zoom = r.zoom
        return {"STATUS": np.array([status.encode()], object), "MESSAGE": np.array([message.encode()], object),
                "RESULT": res, "ZOOM": np.array([zoom], np.float64),
                "PATCH": np.asarray(reply.get("patch", np.zeros(0, np.uint8)), np.uint8),
                "INFO": np.array([json.dumps(reply["info"]).encode()], object)}

    # -- lifetime ---------------------------------------------------------------------------------

    def _drop(self, cid):
        entry = self._sessions.pop(cid, None)
        if entry is not None:
            entry.session.close()
            entry.volume.close()

    def reap(self, now: Optional[float] = None) -> int:
        """End the sessions idle for longer than the timeout; returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [cid for cid, e in self._sessions.items() if now - e.last_used > self.idle_timeout]
            for cid in idle:
                self._drop(cid)
            return len(idle)

    def close(self):
        with self._lock:
            for cid in list(self._sessions):
                self._drop(cid)
        shutil.rmtree(self._tmp, ignore_errors=True)


def _remove_stale_folders():
    """Temporary folders of instances that ended without `close` (a killed server): named by the
    process that made them, removed when that process is gone."""
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        parts = name.split("-")
        if name.startswith("sam3d-serve-") and len(parts) >= 4 and parts[2].isdigit():
            if not os.path.exists(f"/proc/{parts[2]}"):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)


class Reaper(threading.Thread):
    """Runs `SessionTable.reap` a few times per timeout, until `stop()`."""

    def __init__(self, table: SessionTable):
        super().__init__(name="sam3d-reaper", daemon=True)
        self.table = table
        self._stop_event = threading.Event()

    def run(self):
        period = min(max(self.table.idle_timeout / 4, 0.05), 5.0)
        while not self._stop_event.wait(period):
            self.table.reap()

    def stop(self):
        self._stop_event.set()


def open_table(params: dict, *, idle_timeout: float, base_dir: str, name: str) -> SessionTable:
    """A table for the model described by Triton `parameters` (strings): package (relative paths from
    `base_dir`), device, device_id (the GPU), threads, memory_budget (bytes, 0 default), max_sessions,
    max_voxels (all live sessions' voxels), warm_up (0/1), ort_library (optional: else libsam3d's
    own search), bf16 (0/1) and openvino_cache_dir (optional) for the openvino device."""
    def get(key, default):
        v = params.get(key, "")
        return default if v in ("", None) else v

    def flag(v, key):
        v = str(v).strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"parameter {key}: {v!r} is not a yes/no value (1/0, true/false)")

    package = get("package", None)
    if package is None:
        raise ValueError("the model's parameters name no package (parameters { key: \"package\" ... })")
    if not os.path.isabs(package):
        package = os.path.normpath(os.path.join(base_dir, package))
    budget = int(get("memory_budget", "0"))
    if budget:
        set_memory_budget(budget)
    runtime = Runtime(get("ort_library", None))
    model = Model(runtime, package, device=get("device", "cpu"), threads=int(get("threads", "0")),
                  device_id=int(get("device_id", "0")),
                  bf16=flag(get("bf16", "0"), "bf16"),
                  openvino_cache_dir=get("openvino_cache_dir", None))
    if flag(get("warm_up", "1"), "warm_up"):
        model.warm_up()
    return SessionTable(model, max_sessions=int(get("max_sessions", "16")), idle_timeout=idle_timeout, name=name,
                        max_voxels=int(get("max_voxels", str(1 << 29))))


__all__ = ["SessionTable", "Reaper", "open_table"]
