"""A libsam3d session on a Triton Inference Server (serve/triton), with the local `Session`'s methods.

    from sam3d.remote import RemoteSession
    with RemoteSession("http://gpu-server:8000", "ct.nii.gz") as s:      # or "grpc://gpu-server:8001"
        obj = s.add_object()
        r = s.click(obj, (95, 96, 11))          # the same Result as Session.click
        mask = s.mask(obj)                        # uint8 [i, j, k], kept up to date here

The volume travels once, at the start: a NIfTI file's bytes (a path or bytes), or an array with its
geometry. Each click then sends a point and receives the mask's changed box as packed bits; this
object keeps every object's whole mask up to date locally, so `mask()` costs no transfer. Errors raise
`sam3d.Error` with the library's status name from the server. The server ends a session after its idle
timeout, at `close()`, or when it stops; the next call then raises `SessionLost` and `resume()`
starts the session again and replays its history (volume, objects, prompts, settings). Needs
tritonclient (`pip install tritonclient[http]` or `[grpc]`); libsam3d itself is not needed here.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import threading
import time
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from . import Error, Geometry, Result, _STATUS_NAMES, _array_geometry, _warn_empty
from . import wire

__all__ = ["RemoteSession", "SessionLost", "connect"]

_CODES = {"SAM3D_STATUS_" + n: c for c, n in _STATUS_NAMES.items()}
_LOST = "must specify the START flag"


def _error(name: str, message: str) -> Error:
    cls = SessionLost if name == "SAM3D_STATUS_INVALID_ARGUMENT" and message.startswith("no session") else Error
    return cls(_CODES.get(name, 99), message, name=name)


class SessionLost(Error):
    """The server holds no session for this client any more (idle timeout, END, a server restart):
    `RemoteSession.resume()` starts it again and replays what was done."""


def connect(url: str, timeout: float = 600.0):
    """A tritonclient client for `url`: http://, https://, grpc:// or grpcs://host:port (host:port:
    HTTP)."""
    scheme, sep, host = url.partition("://")
    if not sep:
        scheme, host = "http", url
    if scheme in ("grpc", "grpcs"):
        import tritonclient.grpc as tc
        return tc, tc.InferenceServerClient(host, ssl=scheme == "grpcs")
    if scheme not in ("http", "https"):
        raise ValueError(f"server URL {url!r}: http://, https://, grpc:// or grpcs://host:port")
    import tritonclient.http as tc
    # connecting is quick or not at all; a request may wait for an encode on a busy server
    return tc, tc.InferenceServerClient(host, ssl=scheme == "https", connection_timeout=min(timeout, 30.0),
                                        network_timeout=timeout)


class RemoteSession:
    """A session on the server at `url`, running model `model` (its name in the model repository).
    `volume`: a NIfTI path, NIfTI bytes, or an array indexed [i, j, k] with `geometry` (or
    `spacing`, `origin`, `direction`). One call at a time, as locally: a second concurrent call
    raises `Error` named SAM3D_STATUS_BUSY."""

    def __init__(self, url: str, volume, *, model: str = "sam3d", geometry: Optional[Geometry] = None,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), origin: Sequence[float] = (0.0, 0.0, 0.0),
                 direction=None, progress: Optional[Callable[[str, bool], None]] = None, timeout: float = 600.0):
        self.url, self.model_name, self._timeout = url, model, timeout
        self._start_inputs = self._volume_inputs(volume, geometry, spacing, origin, direction)
        self._progress = progress
        self._busy = threading.Lock()
        self._cancel = threading.Event()
        # every request goes out from this one thread: tritonclient's HTTP client (gevent) only
        # works on the thread that made it, and one thread keeps the sequence's requests in order
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sam3d-remote")
        self._history = []          # (op, inputs) replayed by resume()
        self._masks = {}
        self._state = threading.Lock()   # the masks, as the pool thread applies answers to them
        self._unsure = None         # a state-changing call whose answer was lost on the network
        self._info = {}
        self._closed = False
        self._client = None
        self._cid = None
        try:
            self._tc, self._client = self._pool.submit(connect, url, timeout).result()
            self._cid, self._info = self._pool.submit(self._open).result()
            self.dims = tuple(self._info["dims"])
        except BaseException:
            self._shutdown()
            raise

    # -- the volume and the session ---------------------------------------------------------------

    @staticmethod
    def _volume_inputs(volume, geometry, spacing, origin, direction) -> dict:
        if isinstance(volume, (str, os.PathLike)):
            with open(volume, "rb") as f:
                return {"VOLUME": f.read()}
        if isinstance(volume, (bytes, bytearray, memoryview)):
            return {"VOLUME": bytes(volume)}
        a = np.asarray(volume)
        if a.ndim != 3:
            raise ValueError(f"expected a NIfTI path, NIfTI bytes or a 3-D array, got shape {a.shape}")
        dtype = a.dtype.newbyteorder("=").name
        if dtype not in wire.RAW_DTYPES:
            raise TypeError(f"dtype {a.dtype} is not supported: {', '.join(wire.RAW_DTYPES)}")
        geometry = _array_geometry(a.shape, geometry, spacing, origin, direction)
        raw = np.asarray(a, a.dtype.newbyteorder("<")).tobytes(order="F")
        return {"VOLUME": raw, "VOLUME_DTYPE": dtype,
                "GEOMETRY": wire.geometry_values(geometry.dims, geometry.spacing, geometry.origin, geometry.direction)}

    def _open(self, attempts: int = 4):
        """START a new sequence: (correlation ID, the start's INFO). A START refused as BUSY is tried
        again under a new ID: Triton gives a new sequence a free slot, which may be on an instance
        with room for a session."""
        for attempt in range(attempts):
            cid = secrets.randbits(63) | 1
            try:
                return cid, self._send("start", self._start_inputs, start=True, cid=cid)["info"]
            except Error as e:
                if not isinstance(e, SessionLost):
                    self._end_quietly(cid)   # a refused START still holds a sequence slot until its END
                if e.name != "SAM3D_STATUS_BUSY" or attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _end_quietly(self, cid=None):
        try:
            self._send("end", {}, end=True, cid=cid)
        except Exception:
            pass

    def resume(self):
        """Start the session again on the server (a new sequence) and replay everything done so
        far: after a `SessionLost`, a server restart, or to move to another server instance. The
        old sequence is ended first; until the replay has succeeded, the masks here stay as they
        were."""
        def replay():
            self._end_quietly(self._cid)
            cid, info = self._open()
            masks = {}
            for op, inputs in self._history:
                self._apply(op, inputs, self._send(op, inputs, cid=cid), masks)
            with self._state:
                self._cid, self._info, self._masks, self._unsure = cid, info, masks, None

        with self._call_guard():
            self._pool.submit(replay).result()   # after a cancelled call still on its way

    # -- the wire ---------------------------------------------------------------------------------

    def _send(self, op: str, inputs: dict, start: bool = False, end: bool = False, cid=None) -> dict:
        tc = self._tc
        tensors = []
        for name, value in [("OP", op), *inputs.items()]:
            if isinstance(value, (str, bytes)):
                arr = np.array([[value.encode() if isinstance(value, str) else value]], dtype=object)
            else:
                arr = np.asarray(value, {"FP64": np.float64, "UINT32": np.uint32, "BOOL": np.bool_,
                                         "UINT8": np.uint8, "INT32": np.int32}[wire.INPUTS[name]]).reshape(1, -1)
            t = tc.InferInput(name, list(arr.shape), wire.INPUTS[name])
            if "http" in tc.__name__:
                t.set_data_from_numpy(arr, binary_data=True)
            else:
                t.set_data_from_numpy(arr)
            tensors.append(t)
        outputs = [tc.InferRequestedOutput(n, binary_data=True) if "http" in tc.__name__ else tc.InferRequestedOutput(n)
                   for n in wire.OUTPUTS]
        extra = {} if "http" in tc.__name__ else {"client_timeout": self._timeout}
        try:
            r = self._client.infer(self.model_name, tensors, outputs=outputs,
                                   sequence_id=self._cid if cid is None else cid,
                                   sequence_start=start, sequence_end=end, **extra)
        except tc.InferenceServerException as e:
            msg = e.message() or str(e)
            if any(code in str(e.status()) for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")):   # gRPC's transport
                raise Error(3, f"no answer from the server at {self.url}: {msg}", name="SAM3D_STATUS_IO")
            if _LOST in msg:
                raise SessionLost(2, f"no session on the server for this client (ended, idle past the timeout, or "
                                     f"the server restarted): resume() starts it again ({msg})",
                                  name="SAM3D_STATUS_INVALID_ARGUMENT")
            raise Error(8, f"the server at {self.url} refused the request: {msg}", name="SAM3D_STATUS_RUNTIME")
        except Exception as e:  # the connection
            raise Error(3, f"no answer from the server at {self.url}: {e}", name="SAM3D_STATUS_IO")
        status = r.as_numpy("STATUS").ravel()[0].decode()
        message = r.as_numpy("MESSAGE").ravel()[0].decode()
        if status != wire.OK:
            raise _error(status, message)
        res = r.as_numpy("RESULT").ravel()
        return {"result": Result(int(res[0]), tuple(int(v) for v in res[1:4]), tuple(int(v) for v in res[4:7]),
                                 bool(res[7]), float(r.as_numpy("ZOOM").ravel()[0])),
                "patch": r.as_numpy("PATCH").ravel(), "info": json.loads(r.as_numpy("INFO").ravel()[0])}

    def _apply(self, op: str, inputs: dict, out: dict, masks: Optional[dict] = None):
        """Bring the local copy (or `masks`, a replay's) up to date with a successful reply."""
        with self._state:
            masks = self._masks if masks is None else masks
            if op == "add_object":
                masks[out["info"]["object"]] = np.zeros(self.dims, np.uint8)
            elif op in wire.MASK_OPS:
                obj = int(inputs["OBJECT"][0])
                m = masks.setdefault(obj, np.zeros(self.dims, np.uint8))
                r = out["result"]
                wire.unpack_into(m, r.changed_lo, r.changed_hi, out["patch"])
            elif op == "set_inference":
                self._info = {**self._info, "inference": out["info"]["inference"]}

    def _settle(self):
        """After a state-changing call whose answer was lost (a network error): ask the server
        whether it took effect (its count of such calls against ours) and catch up."""
        op, inputs = self._unsure
        info = self._send("info", {})["info"]
        if info.get("applied") == len(self._history) + 1:
            self._history.append((op, inputs))
            if op == "add_object":
                with self._state:
                    self._masks[info["objects"] - 1] = np.zeros(self.dims, np.uint8)
            elif op in wire.MASK_OPS:
                obj = int(inputs["OBJECT"][0])
                m = self._whole(self._send("get_mask", {"OBJECT": [obj]}))
                with self._state:
                    self._masks[obj] = m
            elif op == "set_inference":
                self._info = {**self._info, "inference": info["inference"]}
        self._unsure = None

    @contextlib.contextmanager
    def _call_guard(self):
        """One call at a time, on an open session; a cancel from before the call is dropped."""
        if self._closed:
            raise ValueError("the remote session is closed")
        if not self._busy.acquire(blocking=False):
            raise Error(16, "another call on this session is running", name="SAM3D_STATUS_BUSY")
        self._cancel.clear()
        try:
            yield
        finally:
            self._busy.release()

    def _call(self, op: str, record: bool = True, **inputs) -> dict:
        with self._call_guard():
            if self._progress:
                self._progress("remote", False)

            changes = record and op in wire.MASK_OPS + ("add_object", "set_inference")

            def roundtrip():
                if self._unsure is not None:
                    self._settle()
                try:
                    out = self._send(op, inputs)
                except Error as e:
                    if changes and e.name == "SAM3D_STATUS_IO":
                        self._unsure = (op, inputs)   # the server may have done it: the next call asks
                    raise
                self._apply(op, inputs, out)   # also when the caller stopped waiting (cancel)
                if changes:
                    self._history.append((op, inputs))
                return out

            fut = self._pool.submit(roundtrip)
            waited = 0
            while True:
                try:
                    out = fut.result(timeout=0.05)
                    break
                except concurrent.futures.TimeoutError:
                    waited += 1
                    if self._progress and waited % 2 == 0:
                        self._progress("remote", False)   # a GUI's chance to show it waits and offer Cancel
                    if self._cancel.is_set():
                        raise Error(12, "cancelled while waiting for the server; the server finishes the "
                                        "call and this session's masks follow its answer",
                                    name="SAM3D_STATUS_CANCELLED")
            if self._progress:
                self._progress("remote", True)
            return out

    # -- the local Session's methods --------------------------------------------------------------

    def set_progress(self, fn: Optional[Callable[[str, bool], None]]):
        """`fn("remote", False)` when a request leaves and every 0.1 s while it waits (a GUI can
        process its events and offer Cancel there), `fn("remote", True)` when the answer is in."""
        self._progress = fn

    def add_object(self) -> int:
        return int(self._call("add_object")["info"]["object"])

    def click(self, obj: int, point: Sequence[float], coord: str = "ijk", positive: bool = True) -> Result:
        res = self._call("click", OBJECT=[int(obj)], POINT=[float(v) for v in point], COORD=coord,
                         POSITIVE=[bool(positive)])["result"]
        if res.empty:
            _warn_empty(point, coord, obj)
        return res

    def set_box(self, obj: int, corner_a: Sequence[float], corner_b: Sequence[float], coord: str = "ijk") -> Result:
        pts = [float(v) for v in corner_a] + [float(v) for v in corner_b]
        return self._call("set_box", OBJECT=[int(obj)], POINT=pts, COORD=coord)["result"]

    def set_mask(self, obj: int, mask: np.ndarray) -> Result:
        m = np.asarray(mask)
        if tuple(m.shape) != tuple(self.dims):
            raise ValueError(f"mask shape {m.shape} differs from the volume's {tuple(self.dims)}")
        return self._call("set_mask", OBJECT=[int(obj)], MASK=wire.pack(m))["result"]

    def undo(self, obj: int) -> Result:
        return self._call("undo", OBJECT=[int(obj)])["result"]

    def redo(self, obj: int) -> Result:
        return self._call("redo", OBJECT=[int(obj)])["result"]

    def set_inference(self, test_time_flips: int, keep_clicked_components: bool, zoom_out: Optional[int] = None):
        self._call("set_inference", SETTINGS=[int(test_time_flips), int(bool(keep_clicked_components)),
                                              int(zoom_out or 0)])

    @property
    def inference(self) -> Tuple[int, bool]:
        i = self._info["inference"]
        return int(i["test_time_flips"]), bool(i["keep_clicked_components"])

    @property
    def zoom_out(self) -> int:
        return int(self._info["inference"]["zoom_out"])

    def set_zoom_out(self, max_zoom: int):
        flips, keep = self.inference
        self.set_inference(flips, keep, int(max_zoom))

    @property
    def prompts(self) -> frozenset:
        return frozenset(self._info.get("prompts", ()))

    @property
    def geometry(self) -> Geometry:
        i = self._info
        return Geometry(tuple(i["dims"]), tuple(i["spacing"]), tuple(i["origin"]),
                        np.asarray(i["direction"], float).reshape(3, 3))

    @property
    def server_info(self) -> dict:
        """What the server said at the start: model, provider, idle timeout, its process and sessions."""
        return dict(self._info)

    def cancel(self):
        """Stop waiting for the running call (any thread): it raises `Error` (CANCELLED). The server
        still finishes it; the masks here follow its answer when it arrives."""
        self._cancel.set()

    def mask(self, obj: int) -> np.ndarray:
        """The object's mask: uint8 0/1, shaped like the volume, indexed [i, j, k] (no transfer)."""
        if int(obj) not in self._masks:
            self._call("get_mask", record=False, OBJECT=[int(obj)])   # the server's error for a bad object
        with self._state:
            return self._masks[int(obj)].copy()

    def fetch_mask(self, obj: int) -> np.ndarray:
        """The object's whole mask from the server (a check of the local copy; one full transfer)."""
        return self._whole(self._call("get_mask", record=False, OBJECT=[int(obj)]))

    def _whole(self, out: dict) -> np.ndarray:
        """A get_mask reply as the whole mask."""
        m = np.zeros(self.dims, np.uint8)
        wire.unpack_into(m, (0, 0, 0), self.dims, out["patch"])
        return m

    def write_mask(self, obj: int, path: str):
        """The object's mask as a uint8 NIfTI file written by the server's libsam3d with the volume's
        geometry; written beside and renamed, so the file appears complete or not at all."""
        out = self._call("get_mask_nifti", record=False, OBJECT=[int(obj)])
        tmp = f"{path}.part-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(tmp, "wb") as f:
                f.write(out["patch"].tobytes())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def close(self):
        """End the session on the server (its memory is freed at once)."""
        if self._closed:
            return
        self._closed = True
        self._cancel.set()   # a call still waiting stops; the END goes out after its request
        try:
            self._pool.submit(self._end_quietly).result()
        finally:
            self._shutdown()

    def _shutdown(self):
        # the HTTP client closes on the thread that made it (gevent), after any request in flight
        if self._client is not None:
            self._pool.submit(self._client.close)
        self._pool.shutdown(wait=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
