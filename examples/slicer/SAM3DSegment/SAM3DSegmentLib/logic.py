"""The module's logic: MRML in, MRML out, libsam3d (through its Python binding `sam3d`) in between.

Needs only MRML (a `vtkMRMLScene` with a scalar volume node and a markups point node), so it runs
inside 3D Slicer and headless with the `slicer-core` package alike. The volume's voxels are lent
to libsam3d without a copy (the node's vtkImageData buffer); geometry goes as the node's IJK-to-RAS
matrix; the click is the markups point's world (RAS) position; the mask becomes a segment of a
segmentation node whose labelmap has the volume's geometry.

Transforms: the volume and the point are taken in world coordinates of untransformed nodes; a
volume under a non-linear or parent transform must be hardened first (refused otherwise).

With a server URL the sessions run on a Triton Inference Server (serve/triton) through
`sam3d.remote.RemoteSession`: the same volume array and geometry go to the server once per volume,
no model is opened here, and results, errors and undo are the server's libsam3d's.
"""
from __future__ import annotations

import importlib
import threading

import numpy as np
import vtk
from vtkmodules.util import numpy_support

import sam3d

try:  # inside the Slicer application and with slicer-core alike
    import slicer
except ImportError:  # pragma: no cover
    slicer = None


# the status line's words for a click whose mask is empty (`sam3d.Result.empty`)
NOTHING_FOUND = "the click found nothing (empty mask): click inside the structure"

# progress stages as the status line words them; the library's own five are words already
STAGE_LABELS = {"remote": "computing on the server"}


def stage_label(stage: str) -> str:
    """A progress stage's name for people (`STAGE_LABELS`, else the name itself)."""
    return STAGE_LABELS.get(stage, stage)


# the devices the module offers, in its menu's order; each falls back to the CPU provider where it
# cannot run (`provider_note` says why)
DEVICES = ("cpu", "cuda", "tensorrt", "openvino")


def device_settings(device: str, gpu_memory_mb: int = 0, cuda_tf32: bool = False, bf16: bool = False,
                    openvino_cache_dir: str = None) -> dict:
    """The binding's settings for the module's device choices, as `SAM3DSegmentLogic` takes them:
    the GPU ones always (libsam3d checks them on every device, so a bad one shows at once), bf16 and
    the compiled-model cache only for "openvino" (the widget greys the bf16 box out elsewhere, but it
    keeps its tick, which must not reopen the model on another device)."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r}: one of {', '.join(DEVICES)}")
    settings = {"gpu_memory_limit": int(gpu_memory_mb) << 20, "cuda_tf32": bool(cuda_tf32)}
    if device == "openvino":
        settings["bf16"] = bool(bf16)
        if openvino_cache_dir:
            settings["openvino_cache_dir"] = openvino_cache_dir
    return settings


def _matrix(vtk_m) -> np.ndarray:
    return np.array([[vtk_m.GetElement(r, c) for c in range(4)] for r in range(4)])


class SAM3DSegmentLogic:
    """Segment from one click: `segment(volume_node, point_node)` -> (segmentation node, segment id,
    result). Then, on the same segment: `refine(volume_node, point_node, positive=False)` adds a
    click ("not this" where the package takes negative clicks, `accepts_negative`); `segment_box`
    starts a segment from a markups ROI; `start_from_segment` continues from an existing segment
    (clicks then add to it); `undo` steps back. `zoom_out` (1 off, 2 or 4) is applied to every
    volume's session.

    model_dir: a libsam3d model package; device: "cpu", "cuda", "tensorrt" or "openvino" (falls back
    to CPU; `provider` says what runs, e.g. "OpenVINO bf16", `provider_note` why it differs);
    progress: callable(stage, done) for the five pipeline stages, or "remote" for a call on the
    server (`stage_label` words them); settings: the binding's device settings, GPU (`device_id`,
    `gpu_memory_limit`, `trt_fp16`, `trt_cache_dir`, `cuda_tf32`) and OpenVINO (`bf16`,
    `openvino_cache_dir`); `device_settings` makes them from the widget's choices.
    `message` says what the last `segment()` found, for the module's status line.

    server: a Triton server's URL (http://host:8000 or grpc://host:8001) that runs the sessions,
    with its model `server_model`; `model_dir`, device, threads and settings are then not used (the
    server's own settings hold) and may be left out. `cancel()` stops the running call either way."""

    def __init__(self, model_dir: str = None, device: str = "cpu", threads: int = 0, runtime_library: str = None,
                 progress=None, server: str = None, server_model: str = "sam3d", **settings):
        self.server = server or None
        self.server_model = server_model
        if self.server is None:
            if not model_dir:
                raise ValueError("no model package and no server: set one of them")
            self.runtime = sam3d.Runtime(runtime_library)
            self.model = sam3d.Model(self.runtime, model_dir, device=device, threads=threads, **settings)
            info = self.model.info
            self.provider, self.provider_note = info["provider"], info["provider_note"]
            self.accepts_negative = "negative" in self.model.prompts
        else:
            # imported here so that the in-process path needs no tritonclient
            from sam3d import remote
            self._remote = remote
            flavour = "grpc" if self.server.startswith("grpc://") else "http"
            try:  # here rather than at the first click, where it would read as a failed segmentation
                importlib.import_module(f"tritonclient.{flavour}")
            except ImportError as e:
                raise ImportError(f"a server needs tritonclient in this Python: "
                                  f"pip install \"tritonclient[{flavour}]\" ({e})") from e
            self.runtime = self.model = None
            # the server's provider and prompts are known once a session has started on it
            self.provider, self.provider_note = f"server {self.server}", ""
            self.accepts_negative = False
        self.progress = progress
        self._sessions = {}   # volume node ID -> (session, volume, image data modified time): the
        # encoder's cached region serves later clicks near earlier ones on the same volume
        self._current = {}    # volume node ID -> (object id, segmentation node, segment id) being refined
        self._warm_thread = None
        self.warm_up_outcome = None   # None (not run or running), "done", "stopped" or an error message
        self.message = ""
        self.zoom_out = 4
        self._running = None  # the session whose call `cancel()` stops

    # ---- warm-up ---------------------------------------------------------------------------------
    def start_warm_up(self) -> threading.Thread:
        """Warm the model up on a background thread (`sam3d.Model.warm_up`: one click's work on a
        synthetic volume, so the user's first click does not pay for ONNX Runtime's first runs; on CUDA
        and TensorRT those are the slow ones). A click stops it (libsam3d preempts a running warm-up),
        so it never delays one. Started once per logic: later calls return the same thread.
        `warm_up_outcome` says how it ended.

        With a server nothing runs here (the server warmed its model when it loaded it): the thread
        checks instead that the server has the model ready, so a wrong URL or name shows early."""
        if self._warm_thread is None:
            target = self._warm_up if self.server is None else self._check_server
            self._warm_thread = threading.Thread(target=target, name="sam3d-warm-up", daemon=True)
            self._warm_thread.start()
        return self._warm_thread

    def _check_server(self):
        try:
            # a short timeout: an unreachable host should not keep this thread for minutes
            _, client = self._remote.connect(self.server, timeout=10.0)
            ready = client.is_model_ready(self.server_model)
            self.warm_up_outcome = "done" if ready else (
                f"the server at {self.server} has no model {self.server_model!r} ready")
        except Exception as e:  # noqa: BLE001 - reported; the clicks report their own errors
            self.warm_up_outcome = f"no answer from the server at {self.server}: {e}"

    def _warm_up(self):
        try:
            self.model.warm_up()
            self.warm_up_outcome = "done"
        except sam3d.Error as e:
            # a click or stop_warm_up() preempted it; anything else is only reported: the clicks
            # themselves report their own errors
            self.warm_up_outcome = "stopped" if e.name == "SAM3D_STATUS_CANCELLED" else str(e)

    def stop_warm_up(self):
        """Stop a running warm-up and wait for its thread (before the logic is replaced, so that it
        stops using the CPU/GPU). A server check is left to end on its own: it uses neither, and
        waiting for an unreachable server would hold the caller for its timeout."""
        if self._warm_thread is not None and self.server is None:
            self.model.cancel_warm_up()
            self._warm_thread.join()

    # ---- calls on the sessions -------------------------------------------------------------------
    def cancel(self):
        """Stop the running call (from another thread, or from the progress callback): it raises
        sam3d.Error SAM3D_STATUS_CANCELLED and its segment stays as it was. On a server the call still
        finishes there: after a cancelled refine or undo the segment is no longer the one `refine`
        and `undo` work on (segment again, or start from it)."""
        session = self._running
        if session is not None:
            session.cancel()

    def _call(self, volume_node, session, method: str, *args, **kwargs):
        """`session.method(*args, **kwargs)`, which `cancel()` can stop. A remote session the server
        no longer holds (its idle timeout, a restart) is started again there with everything done on
        it so far, then the call is made again."""
        self._running = session
        try:
            try:
                return getattr(session, method)(*args, **kwargs)
            except sam3d.Error as e:
                if self.server is None:
                    raise
                if isinstance(e, self._remote.SessionLost):
                    session.resume()
                    return getattr(session, method)(*args, **kwargs)
                current = self._current.get(volume_node.GetID())
                if e.name == "SAM3D_STATUS_CANCELLED" and current is not None and args and args[0] == current[0]:
                    # the server still applies a cancelled refine or undo, which the segment never
                    # shows: refining or undoing on would build on (or undo) that unseen step
                    del self._current[volume_node.GetID()]
                raise
        finally:
            self._running = None

    def close(self):
        """End every session (on a server: frees its memory there now rather than at its idle
        timeout). The logic opens new ones if it is used again."""
        sessions, self._sessions = self._sessions, {}
        self._current.clear()
        for session, _vol, _mtime in sessions.values():
            self._close_session(session)

    @staticmethod
    def _close_session(session):
        try:
            session.close()
        except Exception:  # noqa: BLE001 - a server already gone or a call still running: nothing to end
            pass

    # ---- MRML <-> libsam3d ----------------------------------------------------------------------
    @staticmethod
    def volume_array(volume_node) -> np.ndarray:
        """The node's voxels as an [i, j, k] view of its vtkImageData buffer (no copy)."""
        img = volume_node.GetImageData()
        if img is None:
            raise ValueError(f"volume node {volume_node.GetName()!r} has no image data")
        if img.GetNumberOfScalarComponents() != 1:
            raise ValueError(f"volume node {volume_node.GetName()!r} has {img.GetNumberOfScalarComponents()} components")
        nx, ny, nz = img.GetDimensions()
        flat = numpy_support.vtk_to_numpy(img.GetPointData().GetScalars())
        return flat.reshape(nz, ny, nx).transpose(2, 1, 0)

    @staticmethod
    def ijk_to_ras(volume_node) -> np.ndarray:
        m = vtk.vtkMatrix4x4()
        volume_node.GetIJKToRASMatrix(m)
        return _matrix(m)

    def _session(self, volume_node):
        if volume_node.GetParentTransformNode() is not None:
            raise ValueError(f"volume node {volume_node.GetName()!r} is transformed: harden the transform first")
        key = volume_node.GetID()
        mtime = volume_node.GetImageData().GetMTime()
        cached = self._sessions.get(key)
        if cached is None or cached[2] != mtime:
            if cached is not None:
                self._close_session(cached[0])
            arr = self.volume_array(volume_node)
            geom = sam3d.Geometry.from_ras_affine(self.ijk_to_ras(volume_node), arr.shape)
            if self.server is None:
                vol = sam3d.Volume.from_array(arr, geometry=geom)
                session = sam3d.Session(self.model, vol, progress=self.progress)
            else:
                vol = None   # the session sends a copy of the voxels to the server
                session = self._remote.RemoteSession(self.server, arr, model=self.server_model, geometry=geom,
                                                     progress=self.progress)
                info = session.server_info.get("model", {})
                self.provider = f"{info.get('provider', '?')} on the server {self.server}"
                self.accepts_negative = "negative" in session.prompts
            cached = (session, vol, mtime)
            self._sessions[key] = cached
            self._current.pop(key, None)
        # only when it changes: on a server each setting is a round trip
        if cached[0].zoom_out != self.zoom_out:
            self._call(volume_node, cached[0], "set_zoom_out", self.zoom_out)
        return cached

    # ---- the job ---------------------------------------------------------------------------------
    def segment(self, volume_node, point_node, point_index: int = 0, segmentation_node=None,
                segment_name: str = "lesion"):
        """One click (the markups point's world RAS position) -> a segment in `segmentation_node`
        (created in the volume's scene when None). Returns (segmentation node, segment id, Result).
        A click that finds nothing still adds its (empty) segment; `message` then says so, and the
        binding warns (`sam3d.EmptyMaskWarning`)."""
        if point_node.GetNumberOfControlPoints() <= point_index:
            raise ValueError(f"markups node {point_node.GetName()!r} has no point {point_index}")
        ras = [0.0, 0.0, 0.0]
        point_node.GetNthControlPointPositionWorld(point_index, ras)
        session = self._session(volume_node)[0]
        # a new click on this volume starts a new object (refine() adds clicks to it)
        obj = self._call(volume_node, session, "add_object")
        self.message = ""
        result = self._call(volume_node, session, "click", obj, ras, coord="ras")
        return self._publish(volume_node, session, obj, result, segmentation_node, segment_name)

    def _publish(self, volume_node, session, obj, result, segmentation_node=None, segment_name="lesion",
                 segment_id=None):
        """The object's mask into its segment (a new one unless `segment_id`); it becomes the
        volume's current object."""
        mask = session.mask(obj)                                     # [i, j, k] on the volume's grid
        self.message = NOTHING_FOUND if result.empty else f"{result.voxels} voxels"
        if result.zoom > 1.0:
            self.message += f" (zoomed out {result.zoom:g}x)"
        seg, sid = self.add_segment(volume_node, mask, segmentation_node, segment_name, segment_id)
        self._current[volume_node.GetID()] = (obj, seg, sid)
        return seg, sid, result

    def _current_object(self, volume_node):
        session = self._session(volume_node)[0]
        cur = self._current.get(volume_node.GetID())
        if cur is None:
            raise ValueError("no segment to refine on this volume: segment, box or start from a segment first")
        return session, cur

    def refine(self, volume_node, point_node, point_index: int = 0, positive: bool = True):
        """Another click on the volume's current segment: positive, or negative (`positive=False`,
        for packages with `accepts_negative`; others raise sam3d.Error SAM3D_STATUS_UNSUPPORTED and
        the segment stays). Returns (segmentation node, segment id, Result)."""
        if point_node.GetNumberOfControlPoints() <= point_index:
            raise ValueError(f"markups node {point_node.GetName()!r} has no point {point_index}")
        ras = [0.0, 0.0, 0.0]
        point_node.GetNthControlPointPositionWorld(point_index, ras)
        session, (obj, seg, sid) = self._current_object(volume_node)
        result = self._call(volume_node, session, "click", obj, ras, coord="ras", positive=positive)
        return self._publish(volume_node, session, obj, result, seg, segment_id=sid)

    def segment_box(self, volume_node, roi_node, segmentation_node=None, segment_name="lesion"):
        """A box prompt from a markups ROI (its world-aligned bounds, RAS) -> a new segment, clipped
        to the box. Returns (segmentation node, segment id, Result)."""
        bounds = [0.0] * 6
        roi_node.GetRASBounds(bounds)
        session = self._session(volume_node)[0]
        obj = self._call(volume_node, session, "add_object")
        result = self._call(volume_node, session, "set_box", obj, bounds[0::2], bounds[1::2], coord="ras")
        return self._publish(volume_node, session, obj, result, segmentation_node, segment_name)

    def start_from_segment(self, volume_node, segmentation_node, segment_id):
        """Continue from an existing segment (e.g. one drawn by hand or by another tool): it becomes
        the current object's starting mask; later `refine` clicks add to it and update it in place."""
        mask = self.segment_mask(segmentation_node, segment_id, volume_node)
        session = self._session(volume_node)[0]
        obj = self._call(volume_node, session, "add_object")
        result = self._call(volume_node, session, "set_mask", obj, mask)
        self._current[volume_node.GetID()] = (obj, segmentation_node, segment_id)
        self.message = f"starting from {result.voxels} voxels"
        return segmentation_node, segment_id, result

    def undo(self, volume_node):
        """Undo the current segment's last interaction and update the segment."""
        session, (obj, seg, sid) = self._current_object(volume_node)
        result = self._call(volume_node, session, "undo", obj)
        return self._publish(volume_node, session, obj, result, seg, segment_id=sid)

    def add_segment(self, volume_node, mask: np.ndarray, segmentation_node=None, segment_name="lesion",
                    segment_id=None):
        """`mask` as a segment: a new one, or segment `segment_id`'s voxels replaced."""
        scene = volume_node.GetScene()
        if segmentation_node is None:
            segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", volume_node.GetName() + " sam3d")
            segmentation_node.CreateDefaultDisplayNodes()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        labelmap = slicer.vtkOrientedImageData()
        nx, ny, nz = mask.shape
        labelmap.SetDimensions(nx, ny, nz)
        labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        out = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        out[:] = np.ascontiguousarray(mask.transpose(2, 1, 0)).reshape(-1)
        m = vtk.vtkMatrix4x4()
        volume_node.GetIJKToRASMatrix(m)
        labelmap.SetImageToWorldMatrix(m)
        if segment_id is not None and segmentation_node.GetSegmentation().GetSegment(segment_id) is not None:
            slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                labelmap, segmentation_node, segment_id,
                slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
            return segmentation_node, segment_id
        segment_id = segmentation_node.GetSegmentation().GenerateUniqueSegmentID(segment_name)
        segmentation_node.AddSegmentFromBinaryLabelmapRepresentation(labelmap, segment_name, [0.9, 0.3, 0.2], segment_id)
        return segmentation_node, segment_id

    @staticmethod
    def segment_mask(segmentation_node, segment_id, volume_node) -> np.ndarray:
        """A segment as an [i, j, k] uint8 array on `volume_node`'s grid (checks the geometry)."""
        labelmap = slicer.vtkOrientedImageData()
        segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        m = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(m)
        seg_ijk_to_ras = _matrix(m)
        vol_ijk_to_ras = SAM3DSegmentLogic.ijk_to_ras(volume_node)
        if not np.allclose(seg_ijk_to_ras, vol_ijk_to_ras, atol=1e-4):
            raise ValueError("the segment's labelmap geometry differs from the volume's")
        ext = labelmap.GetExtent()
        dims = volume_node.GetImageData().GetDimensions()
        out = np.zeros(dims, np.uint8)
        if ext[1] >= ext[0]:
            sub = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(
                ext[5] - ext[4] + 1, ext[3] - ext[2] + 1, ext[1] - ext[0] + 1).transpose(2, 1, 0)
            out[ext[0]:ext[1] + 1, ext[2]:ext[3] + 1, ext[4]:ext[5] + 1] = sub > 0
        return out
