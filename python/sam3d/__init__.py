"""Python binding of libsam3d's C ABI (ctypes; no compiled extension).

    import numpy as np, sam3d
    rt = sam3d.Runtime()                                   # ONNX Runtime, found as libsam3d finds it
    model = sam3d.Model(rt, "models/demo-lesion")
    vol = sam3d.Volume.from_array(ct, spacing=(0.98, 0.98, 2.0))   # ct[i, j, k], borrowed, no copy
    with sam3d.Session(model, vol) as s:
        obj = s.add_object()
        s.click(obj, (95, 96, 11))                         # voxel index; coord="lps"/"ras" for mm
        mask = s.mask(obj)                                 # uint8 array shaped like ct, [i, j, k]

Geometry is ITK's (LPS): point = origin + direction @ diag(spacing) @ index. Errors raise
`sam3d.Error` with the library's status (`.status`, `.name`) and message. Handles are freed by
`close()`, by `with`, or when garbage-collected; a session keeps its model and volume alive, and a
volume made from an array keeps the array alive. `close()` may come from any thread, also while
another thread (or a progress callback) is inside a call on the same handle: later calls raise
ValueError at once, and the C handle is freed when the last running call has returned. A click whose
mask is empty sets `Result.empty` and warns with `EmptyMaskWarning`.

The library is found through `SAM3D_LIBRARY` (a path to libsam3d.so), then next to this package
(`_lib/`), then the system's search path (an installed libsam3d), then a source checkout's
`target/release`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import ctypes as C
import ctypes.util
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Error", "EmptyMaskWarning", "Geometry", "Runtime", "Model", "Volume", "Session", "Result", "library",
           "ABI_VERSION", "set_memory_budget", "memory_budget"]

ABI_VERSION = 1
_COORDS = {"ijk": 0, "lps": 1, "ras": 2}
_DEVICES = {"cpu": 0, "cuda": 1, "tensorrt": 2, "openvino": 3}
_STAGES = ("load", "resample", "encode", "decode", "paste")
# Status names for `Error.name` when the loaded library has no name for a value ("?"): a library
# older than this binding (SAM3D_STATUS_BUSY came later).
_STATUS_NAMES = {0: "OK", 1: "NULL_POINTER", 2: "INVALID_ARGUMENT", 3: "IO", 4: "BAD_VOLUME", 5: "BAD_MODEL",
                 6: "HASH_MISMATCH", 7: "RUNTIME_MISSING", 8: "RUNTIME", 9: "ABI_MISMATCH", 10: "NON_FINITE",
                 11: "OUT_OF_BOUNDS", 12: "CANCELLED", 13: "TOO_LARGE", 14: "NOTHING_TO_DO",
                 15: "UNSUPPORTED_FORMAT", 16: "BUSY", 17: "UNSUPPORTED", 99: "INTERNAL"}
_PROMPTS = {1: "positive", 2: "negative", 4: "box", 8: "mask"}
_DTYPES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.uint16): 3, np.dtype(np.int16): 4,
           np.dtype(np.uint32): 5, np.dtype(np.int32): 6, np.dtype(np.float32): 7, np.dtype(np.float64): 8}


class _Geometry(C.Structure):
    _fields_ = [("dims", C.c_uint64 * 3), ("spacing", C.c_double * 3), ("origin", C.c_double * 3),
                ("direction", C.c_double * 9)]


class _BufferDesc(C.Structure):
    _fields_ = [("data", C.c_void_p), ("size_bytes", C.c_size_t), ("dtype", C.c_int32),
                ("strides", C.c_int64 * 3), ("geometry", _Geometry)]


class _GpuOptions(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("device_id", C.c_int32), ("memory_limit_bytes", C.c_uint64),
                ("trt_fp16", C.c_int32), ("trt_cache_dir", C.c_char_p), ("cuda_tf32", C.c_int32)]


class _ModelOptions(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("device", C.c_int32), ("threads", C.c_uint32),
                ("skip_hash_check", C.c_int32), ("bf16", C.c_int32), ("cache_dir", C.c_char_p)]


class _ModelInfo(C.Structure):
    _fields_ = [("name", C.c_char_p), ("description", C.c_char_p), ("licence", C.c_char_p), ("hash", C.c_char_p),
                ("provider", C.c_char_p), ("provider_note", C.c_char_p), ("crop", C.c_uint32),
                ("array_frame", C.c_int32)]


class _Box(C.Structure):
    _fields_ = [("lo", C.c_uint64 * 3), ("hi", C.c_uint64 * 3)]


class _Result(C.Structure):
    _fields_ = [("voxels", C.c_uint64), ("changed", _Box), ("encoded", C.c_int32)]


_PROGRESS = C.CFUNCTYPE(None, C.c_int32, C.c_int32, C.c_void_p)
_P = C.c_void_p


def _signatures(lib):
    st = C.c_int32
    sig = {
        "sam3d_abi_version": (C.c_uint32, []),
        "sam3d_version": (C.c_char_p, []),
        "sam3d_last_error": (C.c_char_p, []),
        "sam3d_status_name": (C.c_char_p, [C.c_int32]),
        "sam3d_runtime_new": (st, [C.c_uint32, C.c_char_p, C.POINTER(_P)]),
        "sam3d_runtime_version": (C.c_char_p, [_P]),
        "sam3d_runtime_path": (C.c_char_p, [_P]),
        "sam3d_runtime_free": (None, [_P]),
        "sam3d_model_open": (st, [_P, C.c_char_p, C.POINTER(_ModelOptions), C.POINTER(_P)]),
        "sam3d_model_open_ex": (st, [_P, C.c_char_p, C.POINTER(_ModelOptions), C.POINTER(_GpuOptions),
                                     C.POINTER(_P)]),
        "sam3d_model_info": (st, [_P, C.POINTER(_ModelInfo)]),
        "sam3d_model_warm_up": (st, [_P]),
        "sam3d_model_cancel_warm_up": (st, [_P]),
        "sam3d_model_free": (None, [_P]),
        "sam3d_volume_read_nifti": (st, [C.c_char_p, C.POINTER(_P)]),
        "sam3d_volume_from_buffer": (st, [C.POINTER(_BufferDesc), C.POINTER(_P)]),
        "sam3d_volume_geometry": (st, [_P, C.POINTER(_Geometry)]),
        "sam3d_volume_free": (None, [_P]),
        "sam3d_session_new": (st, [_P, _P, C.c_uint32, C.POINTER(_P)]),
        "sam3d_session_set_progress": (st, [_P, _PROGRESS, C.c_void_p]),
        "sam3d_session_add_object": (st, [_P, C.POINTER(C.c_uint32)]),
        "sam3d_session_click": (st, [_P, C.c_uint32, C.POINTER(C.c_double), C.c_int32, C.POINTER(_Result)]),
        "sam3d_session_undo": (st, [_P, C.c_uint32, C.POINTER(_Result)]),
        "sam3d_session_redo": (st, [_P, C.c_uint32, C.POINTER(_Result)]),
        "sam3d_session_cancel": (st, [_P]),
        "sam3d_session_set_inference": (st, [_P, C.c_uint32, C.c_int32]),
        "sam3d_session_get_inference": (st, [_P, C.POINTER(C.c_uint32), C.POINTER(C.c_int32)]),
        "sam3d_session_get_mask": (st, [_P, C.c_uint32, C.POINTER(C.c_uint8), C.c_size_t]),
        "sam3d_session_mask": (st, [_P, C.c_uint32, C.POINTER(_P)]),
        "sam3d_mask_write_nifti": (st, [_P, C.c_char_p]),
        "sam3d_mask_free": (None, [_P]),
        "sam3d_session_free": (None, [_P]),
        "sam3d_set_memory_budget": (None, [C.c_uint64]),
        "sam3d_memory_budget": (C.c_uint64, []),
    }
    # later additions: a binding on an older library raises on use, not on load
    later = {
        "sam3d_model_prompts": (st, [_P, C.POINTER(C.c_uint32)]),
        "sam3d_session_click_ex": (st, [_P, C.c_uint32, C.POINTER(C.c_double), C.c_int32, C.c_int32,
                                        C.POINTER(_Result)]),
        "sam3d_session_set_box": (st, [_P, C.c_uint32, C.POINTER(C.c_double), C.POINTER(C.c_double), C.c_int32,
                                       C.POINTER(_Result)]),
        "sam3d_session_set_mask": (st, [_P, C.c_uint32, C.POINTER(C.c_uint8), C.c_size_t, C.POINTER(_Result)]),
        "sam3d_session_set_zoom_out": (st, [_P, C.c_uint32]),
        "sam3d_session_get_zoom_out": (st, [_P, C.POINTER(C.c_uint32)]),
        "sam3d_session_get_zoom": (st, [_P, C.c_uint32, C.POINTER(C.c_double)]),
        "sam3d_session_get_mask_box": (st, [_P, C.c_uint32, C.POINTER(_Box), C.POINTER(C.c_uint8), C.c_size_t]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    for name, (res, args) in later.items():
        f = getattr(lib, name, None)
        if f is not None:
            f.restype, f.argtypes = res, args
    return lib


def _later(name: str):
    """A C function added after the first ABI, with a clear error when the library is older."""
    f = getattr(library(), name, None)
    if f is None:
        raise Error(2, f"the loaded libsam3d ({version()}) is older than this binding: it has no {name}")
    return f


def _candidates():
    env = os.environ.get("SAM3D_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "_lib", "libsam3d.so")
    found = ctypes.util.find_library("sam3d")
    if found:
        yield found
    # a source checkout: python/sam3d -> target/release
    yield os.path.join(os.path.dirname(os.path.dirname(here)), "target", "release", "libsam3d.so")


_lib = None


def library():
    """The loaded libsam3d (ctypes.CDLL); raises OSError naming every place tried."""
    global _lib
    if _lib is None:
        tried = []
        for path in _candidates():
            if os.path.sep in path and not os.path.exists(path):
                tried.append(f"{path} (missing)")
                continue
            try:
                lib = C.CDLL(path)
            except OSError as e:
                tried.append(f"{path} ({e})")
                continue
            if lib.sam3d_abi_version() != ABI_VERSION:
                tried.append(f"{path} (ABI {lib.sam3d_abi_version()}, this binding needs {ABI_VERSION})")
                continue
            _lib = _signatures(lib)
            break
        else:
            raise OSError("libsam3d not found; set SAM3D_LIBRARY to libsam3d.so. Tried: " + "; ".join(tried))
    return _lib


class Error(RuntimeError):
    """A libsam3d call failed: `status` (the C enum value), `name` (e.g. SAM3D_STATUS_BAD_VOLUME), message.
    SAM3D_STATUS_BUSY: a session call while another call on the same session runs (on another thread,
    or from that call's progress callback)."""

    def __init__(self, status: int, message: str, name: Optional[str] = None):
        self.status = int(status)
        if name is None:  # a remote error brings its name; a local one asks the library
            name = library().sam3d_status_name(self.status)
            name = name.decode() if name else "?"
        if name == "?" and self.status in _STATUS_NAMES:
            name = "SAM3D_STATUS_" + _STATUS_NAMES[self.status]
        self.name = name
        self.message = message
        super().__init__(f"{self.name}: {message}")


class EmptyMaskWarning(UserWarning):
    """A click returned an empty mask (`Result.empty`): the model found nothing at that point. The
    click is recorded all the same (undo removes it)."""


def _check(status: int):
    if status != 0:
        msg = library().sam3d_last_error()
        raise Error(status, msg.decode("utf-8", "replace") if msg else "")


@dataclass(frozen=True)
class Geometry:
    """ITK geometry: dims (i, j, k), spacing (mm), origin (LPS mm), direction (3x3, column c = axis c in LPS)."""
    dims: tuple
    spacing: tuple
    origin: tuple
    direction: np.ndarray

    def _c(self) -> _Geometry:
        g = _Geometry()
        g.dims[:] = [int(d) for d in self.dims]
        g.spacing[:] = [float(s) for s in self.spacing]
        g.origin[:] = [float(o) for o in self.origin]
        g.direction[:] = [float(v) for v in np.asarray(self.direction, float).reshape(9)]
        return g

    @classmethod
    def _from_c(cls, g: _Geometry) -> "Geometry":
        return cls(tuple(int(d) for d in g.dims), tuple(g.spacing), tuple(g.origin),
                   np.asarray(list(g.direction), float).reshape(3, 3))

    def index_to_lps(self, ijk) -> np.ndarray:
        return np.asarray(self.origin) + self.direction @ (np.asarray(self.spacing) * np.asarray(ijk, float))

    def lps_to_index(self, lps) -> np.ndarray:
        return np.linalg.solve(self.direction * np.asarray(self.spacing), np.asarray(lps, float) - self.origin)

    @classmethod
    def from_ras_affine(cls, affine, dims) -> "Geometry":
        """From a NIfTI/nibabel voxel-to-RAS affine (orthogonal columns)."""
        lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, float)[:3]
        sp = np.linalg.norm(lps[:, :3], axis=0)
        return cls(tuple(int(d) for d in dims), tuple(sp), tuple(lps[:, 3]), lps[:, :3] / sp)

    def ras_affine(self) -> np.ndarray:
        a = np.eye(4)
        a[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ (self.direction * np.asarray(self.spacing))
        a[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(self.origin)
        return a


class _Handle:
    """A C handle shared by threads. ctypes releases the GIL during a C call, so `close()` on one
    thread may come while another thread is inside a call on the handle (or from that call's own
    progress callback): every call holds a use (`_live()`), and the free waits for the last use to
    end. close() itself never waits, so it cannot deadlock against a call it is nested in."""
    _free = None

    def __init__(self):
        self._h = _P()
        self._lock = threading.Lock()
        self._users = 0           # calls in flight on the handle
        self._closed = False

    @contextlib.contextmanager
    def _live(self):
        """The handle for one call; ValueError once closed."""
        with self._lock:
            if self._closed or not self._h.value:
                raise ValueError(f"{type(self).__name__} is closed")
            self._users += 1
        try:
            yield self._h
        finally:
            self._release()

    @contextlib.contextmanager
    def _pin(self):
        """Keep the C handle from being freed during a call on a handle made from it (a session's
        model and volume); unlike `_live()`, a closed handle is no error."""
        with self._lock:
            pinned = bool(self._h.value)
            self._users += pinned
        try:
            yield
        finally:
            if pinned:
                self._release()

    def _release(self):
        with self._lock:
            self._users -= 1
            h = self._take()
        self._free_c(h)

    def _take(self):
        """With the lock held: the handle to free now (closed and unused), detached; else None."""
        if self._closed and self._users == 0 and self._h.value:
            h, self._h = self._h, _P()
            return h
        return None

    def _free_c(self, h):
        if h is not None:
            getattr(library(), self._free)(h)

    def close(self):
        """Free the handle: now, or when the last call running on it returns (another thread's, or
        the one whose progress callback this is). Later calls raise ValueError. A running call is not
        stopped: `Session.cancel()` first does that."""
        lock = getattr(self, "_lock", None)
        if lock is None:          # __init__ did not get as far as the handle
            return
        with lock:
            self._closed = True
            h = self._take()
        self._free_c(h)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Runtime(_Handle):
    """ONNX Runtime, loaded once per process (`path`: libonnxruntime.so; None: libsam3d's search)."""
    _free = "sam3d_runtime_free"

    def __init__(self, path: Optional[str] = None):
        super().__init__()
        _check(library().sam3d_runtime_new(ABI_VERSION, os.fsencode(path) if path else None, C.byref(self._h)))

    # the strings are the handle's: copied before the use ends
    @property
    def version(self) -> str:
        with self._live() as h:
            return library().sam3d_runtime_version(h).decode()

    @property
    def path(self) -> str:
        with self._live() as h:
            return library().sam3d_runtime_path(h).decode()


class Model(_Handle):
    """A model package directory. `device`: "cpu", "cuda", "tensorrt" or "openvino" (falls back to the
    CPU provider; `info["provider"]` says what runs, `info["provider_note"]` why). OpenVINO settings:
    `bf16` (where the CPU has AMX-BF16 or AVX512-BF16; else fp32), `openvino_cache_dir`.
    GPU settings (checked on every machine): `device_id`, `gpu_memory_limit` (bytes, 0: no cap),
    `trt_fp16`, `trt_cache_dir` (TensorRT engine cache folder, created when missing), `cuda_tf32` (TF32
    tensor cores on CUDA: faster, about 1e-3 relative error; off: masks as on the CPU)."""
    _free = "sam3d_model_free"

    def __init__(self, runtime: Runtime, package_dir: str, device: str = "cpu", threads: int = 0,
                 check_hashes: bool = True, *, device_id: int = 0, gpu_memory_limit: int = 0,
                 trt_fp16: bool = False, trt_cache_dir: Optional[str] = None, cuda_tf32: bool = False,
                 bf16: bool = False, openvino_cache_dir: Optional[str] = None):
        super().__init__()
        if device not in _DEVICES:
            raise ValueError(f"device {device!r}: one of {sorted(_DEVICES)}")
        opts = _ModelOptions(C.sizeof(_ModelOptions), _DEVICES[device], int(threads), 0 if check_hashes else 1,
                             int(bool(bf16)), None if openvino_cache_dir is None else os.fsencode(openvino_cache_dir))
        gpu = _GpuOptions(C.sizeof(_GpuOptions), int(device_id), int(gpu_memory_limit), int(bool(trt_fp16)),
                          None if trt_cache_dir is None else os.fsencode(trt_cache_dir), int(bool(cuda_tf32)))
        self._runtime = runtime
        with runtime._live() as rt:
            _check(library().sam3d_model_open_ex(rt, os.fsencode(package_dir), C.byref(opts), C.byref(gpu),
                                                 C.byref(self._h)))

    def warm_up(self):
        """One click's work on a small synthetic volume, so the first real click does not pay for
        ONNX Runtime's first runs. Blocks (the GIL is released): run it in a thread after opening.
        A click on any session of this model, or `cancel_warm_up()`, stops it: it then raises
        `Error` with name SAM3D_STATUS_CANCELLED."""
        with self._live() as h:
            _check(library().sam3d_model_warm_up(h))

    def cancel_warm_up(self):
        """Stop a running `warm_up()` (from any thread); nothing happens if none runs."""
        with self._live() as h:
            _check(library().sam3d_model_cancel_warm_up(h))

    @property
    def prompts(self) -> frozenset:
        """The prompts the package accepts: "positive", "box" and "mask" always, "negative" when it
        was trained with negative clicks."""
        bits = C.c_uint32()
        with self._live() as h:
            _check(_later("sam3d_model_prompts")(h, C.byref(bits)))
        return frozenset(name for bit, name in _PROMPTS.items() if bits.value & bit)

    @property
    def info(self) -> dict:
        i = _ModelInfo()
        with self._live() as h:   # the strings are the model's: copied before the use ends
            _check(library().sam3d_model_info(h, C.byref(i)))
            d = {k: (getattr(i, k).decode() if isinstance(getattr(i, k), bytes) else getattr(i, k))
                 for k, _ in _ModelInfo._fields_}
        d["array_frame"] = bool(d["array_frame"])
        return d


def _array_geometry(shape, geometry: Optional[Geometry], spacing, origin, direction) -> Geometry:
    """The geometry of an array shaped `shape`: `geometry` (its dims checked), else one made of
    spacing, origin and direction (identity when None)."""
    if geometry is None:
        return Geometry(tuple(shape), tuple(spacing), tuple(origin),
                        np.eye(3) if direction is None else np.asarray(direction, float))
    if tuple(geometry.dims) != tuple(shape):
        raise ValueError(f"geometry dims {geometry.dims} differ from the array's shape {tuple(shape)}")
    return geometry


def _warn_empty(point, coord: str, obj: int):
    """`EmptyMaskWarning` for a click whose mask came out empty, pointing at the caller's caller."""
    warnings.warn(EmptyMaskWarning(
        f"the click at {tuple(float(v) for v in point)} ({coord}) found nothing: object {int(obj)}'s "
        "mask is empty"), stacklevel=3)


class Volume(_Handle):
    """A volume: `read_nifti(path)` or `from_array(array[i, j, k], ...)` (borrowed, no copy)."""
    _free = "sam3d_volume_free"

    def __init__(self):
        super().__init__()
        self._array = None

    @classmethod
    def read_nifti(cls, path: str) -> "Volume":
        v = cls()
        _check(library().sam3d_volume_read_nifti(os.fsencode(path), C.byref(v._h)))
        return v

    @classmethod
    def from_array(cls, array: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   origin: Sequence[float] = (0.0, 0.0, 0.0), direction=None,
                   geometry: Optional[Geometry] = None) -> "Volume":
        """Borrow `array` (3-D, indexed [i, j, k], any of uint8..float64) with LPS geometry. Arrays
        with negative strides (flipped views) or a byte order other than the machine's are copied
        once; otherwise the volume reads the array's memory, which it keeps alive."""
        a = np.asarray(array)
        if a.ndim != 3:
            raise ValueError(f"expected a 3-D array, got shape {a.shape}")
        if a.dtype.newbyteorder("=") not in _DTYPES:
            raise TypeError(f"dtype {a.dtype} is not supported: {sorted(str(d) for d in _DTYPES)}")
        if not a.dtype.isnative or any(s <= 0 for s in a.strides) or a.size == 0:
            a = np.array(a, dtype=a.dtype.newbyteorder("="), order="F")
        geometry = _array_geometry(a.shape, geometry, spacing, origin, direction)
        desc = _BufferDesc()
        desc.data = a.ctypes.data
        # bytes readable from the first element: the span of the (positive-stride) view
        desc.size_bytes = int(sum((n - 1) * s for n, s in zip(a.shape, a.strides)) + a.itemsize)
        desc.dtype = _DTYPES[a.dtype]
        desc.strides[:] = list(a.strides)
        desc.geometry = geometry._c()
        v = cls()
        v._array = a
        _check(library().sam3d_volume_from_buffer(C.byref(desc), C.byref(v._h)))
        return v

    @property
    def geometry(self) -> Geometry:
        g = _Geometry()
        with self._live() as h:
            _check(library().sam3d_volume_geometry(h, C.byref(g)))
        return Geometry._from_c(g)


@dataclass(frozen=True)
class Result:
    """What a click, box, starting segment, undo or redo did: the mask's voxel count, the box it
    changed (lo, hi), whether the encoder ran, the zoom that answered (a multiple of the model's
    spacing: 1 its own, 2 or 4 after automatic zoom-out, a box's own; 0 when no model ran); `empty`:
    the mask has no voxels."""
    voxels: int
    changed_lo: tuple
    changed_hi: tuple
    encoded: bool
    zoom: float = 1.0

    @property
    def empty(self) -> bool:
        return self.voxels == 0


def _result(r: _Result) -> Result:
    return Result(int(r.voxels), tuple(r.changed.lo), tuple(r.changed.hi), bool(r.encoded))


class Session(_Handle):
    """Segmenting one volume with one model: objects, clicks, undo/redo, masks. One call at a time:
    a call while another runs on the same session (another thread's, or from the running call's
    progress callback) raises `Error` named SAM3D_STATUS_BUSY (libraries before that status:
    SAM3D_STATUS_INVALID_ARGUMENT), except `cancel()` and `close()`."""
    _free = "sam3d_session_free"

    def __init__(self, model: Model, volume: Volume, progress: Optional[Callable[[str, bool], None]] = None):
        super().__init__()
        self._model, self._volume = model, volume
        self._cb = None
        with model._live() as m, volume._live() as v:
            _check(library().sam3d_session_new(m, v, ABI_VERSION, C.byref(self._h)))
        self._dims = volume.geometry.dims
        if progress is not None:
            self.set_progress(progress)

    @contextlib.contextmanager
    def _live(self):
        # libsam3d's session holds its own references to the model and volume; pinning their
        # handles as well keeps a close() of them from freeing them under a running call
        with self._model._pin(), self._volume._pin(), super()._live() as h:
            yield h

    def set_progress(self, fn: Optional[Callable[[str, bool], None]]):
        """`fn(stage, done)` at the start (done False) and end (True) of each stage."""
        cb = None if fn is None else _PROGRESS(
            lambda stage, done, _user: fn(_STAGES[stage] if 0 <= stage < 5 else str(stage), bool(done)))
        with self._live() as h:
            # while a call runs the library refuses (BUSY): the old callback, which that call
            # uses, stays referenced
            _check(library().sam3d_session_set_progress(h, cb if cb is not None else _PROGRESS(), None))
            self._cb = cb

    def add_object(self) -> int:
        out = C.c_uint32()
        with self._live() as h:
            _check(library().sam3d_session_add_object(h, C.byref(out)))
        return int(out.value)

    def _zoomed(self, h, obj: int, r: _Result) -> Result:
        res = _result(r)
        f = getattr(library(), "sam3d_session_get_zoom", None)
        if f is not None:
            z = C.c_double()
            _check(f(h, int(obj), C.byref(z)))
            res = dataclasses.replace(res, zoom=float(z.value))
        return res

    def click(self, obj: int, point: Sequence[float], coord: str = "ijk", positive: bool = True) -> Result:
        """A click on object `obj`: positive ("this") by default; `positive=False` is a negative
        click ("not this"), which only packages trained with them accept (`Model.prompts`; others
        raise `Error` named SAM3D_STATUS_UNSUPPORTED). A click whose mask comes out empty returns
        normally with `Result.empty` set and warns (`EmptyMaskWarning`)."""
        if coord not in _COORDS:
            raise ValueError(f"coord {coord!r}: one of {sorted(_COORDS)}")
        p = (C.c_double * 3)(*[float(v) for v in point])
        r = _Result()
        with self._live() as h:
            if positive:
                _check(library().sam3d_session_click(h, int(obj), p, _COORDS[coord], C.byref(r)))
            else:
                _check(_later("sam3d_session_click_ex")(h, int(obj), p, _COORDS[coord], 0, C.byref(r)))
            res = self._zoomed(h, obj, r)
        if res.empty:
            _warn_empty(point, coord, obj)
        return res

    def set_box(self, obj: int, corner_a: Sequence[float], corner_b: Sequence[float], coord: str = "ijk") -> Result:
        """A box prompt on object `obj` (two opposite corners): the crop is placed and sized on the
        box, its centre is the positive prompt while the object has no positive click, and the mask
        is clipped to the box. Every package accepts boxes."""
        if coord not in _COORDS:
            raise ValueError(f"coord {coord!r}: one of {sorted(_COORDS)}")
        a = (C.c_double * 3)(*[float(v) for v in corner_a])
        b = (C.c_double * 3)(*[float(v) for v in corner_b])
        r = _Result()
        with self._live() as h:
            _check(_later("sam3d_session_set_box")(h, int(obj), a, b, _COORDS[coord], C.byref(r)))
            return self._zoomed(h, obj, r)

    def set_mask(self, obj: int, mask: np.ndarray) -> Result:
        """Start object `obj` from a segment of your own (shaped like the volume, indexed [i, j, k],
        non-zero inside): positive clicks add the model's answer to it, a negative click (packages
        that take them) removes its connected part the click lies in; undo returns to what the
        object had before."""
        m = np.asarray(mask)
        if tuple(m.shape) != tuple(self._dims):
            raise ValueError(f"mask shape {m.shape} differs from the volume's {tuple(self._dims)}")
        buf = np.ascontiguousarray((m != 0).astype(np.uint8).transpose(2, 1, 0)).ravel()
        r = _Result()
        with self._live() as h:
            _check(_later("sam3d_session_set_mask")(h, int(obj), buf.ctypes.data_as(C.POINTER(C.c_uint8)),
                                                    buf.size, C.byref(r)))
            return self._zoomed(h, obj, r)

    # an undo or redo may well leave an empty mask (no clicks left): no warning
    def undo(self, obj: int) -> Result:
        r = _Result()
        with self._live() as h:
            _check(library().sam3d_session_undo(h, int(obj), C.byref(r)))
            return self._zoomed(h, obj, r)

    def redo(self, obj: int) -> Result:
        r = _Result()
        with self._live() as h:
            _check(library().sam3d_session_redo(h, int(obj), C.byref(r)))
            return self._zoomed(h, obj, r)

    @property
    def zoom_out(self) -> int:
        """The largest automatic zoom-out: 1 (off), 2 or 4 (the default) times the model's spacing."""
        z = C.c_uint32()
        with self._live() as h:
            _check(_later("sam3d_session_get_zoom_out")(h, C.byref(z)))
        return int(z.value)

    def set_zoom_out(self, max_zoom: int):
        """Automatic zoom-out for lesions larger than the crop, up to `max_zoom` (1 off, 2 or 4)."""
        with self._live() as h:
            _check(_later("sam3d_session_set_zoom_out")(h, int(max_zoom)))

    def cancel(self):
        """Stop the session's running call (from any thread): it raises `Error` (CANCELLED)."""
        with self._live() as h:
            _check(library().sam3d_session_cancel(h))

    def set_inference(self, test_time_flips: int, keep_clicked_components: bool, zoom_out: Optional[int] = None):
        """Test-time flips (1, 2, 4 or 8), the clicked-component rule and (when given) the largest
        automatic zoom-out (1 off, 2 or 4) for the next clicks."""
        with self._live() as h:
            _check(library().sam3d_session_set_inference(h, int(test_time_flips), 1 if keep_clicked_components else 0))
        if zoom_out is not None:
            self.set_zoom_out(zoom_out)

    @property
    def inference(self) -> Tuple[int, bool]:
        """(test-time flips, keep clicked components) in force: the package's until set."""
        f, k = C.c_uint32(), C.c_int32()
        with self._live() as h:
            _check(library().sam3d_session_get_inference(h, C.byref(f), C.byref(k)))
        return int(f.value), bool(k.value)

    def mask(self, obj: int) -> np.ndarray:
        """The object's mask: uint8 0/1, shaped like the volume, indexed [i, j, k]."""
        nx, ny, nz = self._dims
        buf = np.empty(nx * ny * nz, np.uint8)
        with self._live() as h:
            _check(library().sam3d_session_get_mask(h, int(obj), buf.ctypes.data_as(C.POINTER(C.c_uint8)),
                                                    buf.size))
        return buf.reshape(nz, ny, nx).transpose(2, 1, 0)

    def mask_box(self, obj: int, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """The object's mask inside the box [lo, hi) (e.g. a Result's changed_lo, changed_hi): uint8
        0/1 indexed [i, j, k] within the box, without copying the whole volume."""
        n = [max(0, int(h) - int(l)) for l, h in zip(lo, hi)]
        buf = np.zeros(n[0] * n[1] * n[2], np.uint8)
        box = _Box()
        box.lo[:] = [int(v) for v in lo]
        box.hi[:] = [int(v) for v in hi]
        with self._live() as h:
            _check(_later("sam3d_session_get_mask_box")(h, int(obj), C.byref(box),
                                                        buf.ctypes.data_as(C.POINTER(C.c_uint8)), buf.size))
        return buf.reshape(n[2], n[1], n[0]).transpose(2, 1, 0)

    def write_mask(self, obj: int, path: str):
        """Write the object's mask as a uint8 NIfTI file (.nii or .nii.gz) with the volume's
        geometry; the file appears complete or not at all."""
        m = _P()
        with self._live() as h:
            _check(library().sam3d_session_mask(h, int(obj), C.byref(m)))
        try:
            _check(library().sam3d_mask_write_nifti(m, os.fsencode(path)))
        finally:
            library().sam3d_mask_free(m)


def version() -> str:
    return library().sam3d_version().decode()


def set_memory_budget(nbytes: int):
    """The most bytes libsam3d allocates for one whole-volume array, process-wide (0: the default,
    4 GiB); a volume or click needing more is refused with SAM3D_STATUS_TOO_LARGE."""
    library().sam3d_set_memory_budget(int(nbytes))


def memory_budget() -> int:
    return int(library().sam3d_memory_budget())
