"""3D Slicer scripted module: one click in a tumour -> its 3D segment, computed by libsam3d.

The thin application layer only: the widget picks a volume, a markups point, the model package and
the device (CPU, CUDA, TensorRT, or OpenVINO on the CPU, optionally in bf16), and calls
`SAM3DSegmentLib.SAM3DSegmentLogic`, which needs nothing but MRML (it is tested headless with the
slicer-core package). Requires the `sam3d` Python binding in Slicer's
Python (`PythonSlicer -m pip install /path/to/libsam3d/python`) and libsam3d + ONNX Runtime
(`make install`, or SAM3D_LIBRARY / SAM3D_ORT_LIBRARY). With a server set (a Triton Inference Server
running serve/triton), the sessions run there and only the binding and tritonclient are needed here
(`PythonSlicer -m pip install "tritonclient[http]"`, or `[grpc]` for a grpc:// URL).
"""
import os

import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleWidget)

from SAM3DSegmentLib import SAM3DSegmentLogic
from SAM3DSegmentLib.logic import DEVICES, device_settings, stage_label

# the module's keys in Slicer's application settings (kept between sessions of Slicer)
SETTING_SERVER = "SAM3DSegment/Server"
SETTING_SERVER_MODEL = "SAM3DSegment/ServerModel"


class SAM3DSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "SAM3D Segment"
        parent.categories = ["Segmentation"]
        parent.contributors = ["libsam3d developers"]
        parent.helpText = "Click once inside a tumour; libsam3d (3DSAM-adapter) returns its 3D segment."
        parent.acknowledgementText = "Model: Gong et al., 3DSAM-adapter (2023). Library: libsam3d, Apache-2.0."


class SAM3DSegmentWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        form = qt.QFormLayout()
        self.layout.addLayout(form)
        self.volume = slicer.qMRMLNodeComboBox()
        self.volume.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.volume.setMRMLScene(slicer.mrmlScene)
        form.addRow("Volume:", self.volume)
        self.point = slicer.qMRMLNodeComboBox()
        self.point.nodeTypes = ["vtkMRMLMarkupsFiducialNode"]
        self.point.setMRMLScene(slicer.mrmlScene)
        form.addRow("Click (point list):", self.point)
        self.model = qt.QLineEdit(os.environ.get("SAM3D_MODEL", ""))
        # the model opens and warms up as soon as its settings are known, not at the first click
        self.model.connect("editingFinished()", self._prepare)
        self.model.setToolTip("the libsam3d model package folder (not needed when a server is set)")
        form.addRow("Model package:", self.model)
        settings = qt.QSettings()
        self.server = qt.QLineEdit(str(settings.value(SETTING_SERVER, "") or ""))
        self.server.setToolTip("a Triton server running serve/triton, e.g. http://gpu-server:8000 or "
                               "grpc://gpu-server:8001; empty: segment in this process")
        self.server.connect("editingFinished()", self._server_changed)
        form.addRow("Server:", self.server)
        self.server_model = qt.QLineEdit(str(settings.value(SETTING_SERVER_MODEL, "sam3d") or "sam3d"))
        self.server_model.setToolTip("the model's name on the server (its --model NAME=PACKAGE)")
        self.server_model.connect("editingFinished()", self._server_changed)
        form.addRow("Server model:", self.server_model)
        self.device = qt.QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setToolTip("where the model runs; without that device here it runs on the CPU, "
                               "and the status line says why")
        self.device.connect("currentIndexChanged(int)", lambda _i: self._device_changed())
        form.addRow("Device:", self.device)
        self.bf16 = qt.QCheckBox("bf16 on OpenVINO (faster, ~1e-2 on probabilities)")
        self.bf16.setToolTip("only where the CPU has AMX-BF16 or AVX512-BF16; elsewhere fp32, and "
                             "the status line says so")
        self.bf16.enabled = False
        self.bf16.connect("toggled(bool)", lambda _on: self._prepare())
        form.addRow(self.bf16)
        self.memory = qt.QSpinBox()
        self.memory.setRange(0, 1 << 20)
        self.memory.setSuffix(" MB")
        self.memory.setToolTip("cap on the GPU memory arena; 0: no cap")
        form.addRow("GPU memory cap:", self.memory)
        self.tf32 = qt.QCheckBox("TF32 on CUDA (faster, ~1e-3 relative error)")
        form.addRow(self.tf32)
        self.zoom = qt.QComboBox()
        self.zoom.addItems(["4", "2", "1"])
        self.zoom.setToolTip("automatic zoom-out for lesions larger than the model's crop (1: off)")
        form.addRow("Zoom-out up to:", self.zoom)
        self.status = qt.QLabel("")
        form.addRow(self.status)
        apply = qt.QPushButton("Segment (new segment from the last point)")
        apply.connect("clicked()", self.onApply)
        form.addRow(apply)
        # refining the current segment: another point, "not this" where the package takes it
        self.negative = qt.QCheckBox("Negative ('not this'; packages trained with negative clicks)")
        form.addRow(self.negative)
        refine = qt.QPushButton("Refine (add the last point to the current segment)")
        refine.connect("clicked()", self.onRefine)
        form.addRow(refine)
        undo = qt.QPushButton("Undo")
        undo.connect("clicked()", self.onUndo)
        form.addRow(undo)
        # a box: a markups ROI around the lesion
        self.roi = slicer.qMRMLNodeComboBox()
        self.roi.nodeTypes = ["vtkMRMLMarkupsROINode"]
        self.roi.setMRMLScene(slicer.mrmlScene)
        form.addRow("Box (ROI):", self.roi)
        box = qt.QPushButton("Segment inside the box")
        box.connect("clicked()", self.onBox)
        form.addRow(box)
        # start from an existing segment (drawn by hand, another tool, an earlier session)
        self.segment = slicer.qMRMLSegmentSelectorWidget()
        self.segment.setMRMLScene(slicer.mrmlScene)
        form.addRow("Start from segment:", self.segment)
        start = qt.QPushButton("Start from this segment (then Refine)")
        start.connect("clicked()", self.onStart)
        form.addRow(start)
        self.layout.addStretch(1)
        self._logic = None

    def _progress(self, stage, done):
        self.status.text = f"{stage_label(stage)} {'done' if done else '...'}"
        slicer.app.processEvents()

    def enter(self):
        self._prepare()

    def cleanup(self):
        self._drop_logic()

    def _device_changed(self):
        self.bf16.enabled = self.device.currentText == "openvino"
        self._prepare()

    @staticmethod
    def _openvino_cache_dir():
        """OpenVINO's compiled models in Slicer's cache folder, so that opening the model again,
        in this session of Slicer or a later one, does not compile it again."""
        cache = getattr(slicer.app, "cachePath", "")
        return os.path.join(cache, "SAM3DSegment", "openvino") if cache else None

    def _server_changed(self):
        settings = qt.QSettings()
        settings.setValue(SETTING_SERVER, self.server.text.strip())
        settings.setValue(SETTING_SERVER_MODEL, self.server_model.text.strip() or "sam3d")
        self._prepare()

    def _drop_logic(self):
        """Stop the logic's warm-up and end its sessions (on a server they would otherwise hold its
        memory until its idle timeout)."""
        if self._logic is not None:
            self._logic.stop_warm_up()
            self._logic.close()
            self._logic = None   # a new model that fails to open leaves no stale logic behind

    def _logic_for_settings(self):
        """The logic for the current settings: the open one, or a new one (the old one's warm-up stopped)."""
        server = self.server.text.strip()
        server_model = self.server_model.text.strip() or "sam3d"
        device = self.device.currentText
        settings = device_settings(device, self.memory.value, self.tf32.checked, self.bf16.checked,
                                   self._openvino_cache_dir())
        # with a server, the local model settings do not matter: changing them keeps its sessions
        key = (server, server_model) if server else (self.model.text, device, tuple(sorted(settings.items())))
        if self._logic is None or self._logic_key != key:
            self._drop_logic()
            if server:
                self._logic = SAM3DSegmentLogic(progress=self._progress, server=server, server_model=server_model)
            else:
                self._logic = SAM3DSegmentLogic(self.model.text, device=device, progress=self._progress,
                                                **settings)
            self._logic_key = key
        return self._logic

    def _prepare(self):
        """Open the model and warm it up in the background (with a server: check it has the model);
        a failure here only shows in the status line (the Segment button reports it in full)."""
        server = self.server.text.strip()
        if not self.model.text and not server:
            return
        try:
            logic = self._logic_for_settings()
            thread = logic.start_warm_up()
            if server:
                self.status.text = f"server {server}: checking it has the model"
                self._show_server_check(logic, thread)
            else:
                # what runs, at once: a device that fell back, or fp32 for bf16, shows before a click
                note = f": {logic.provider_note}" if logic.provider_note else ""
                self.status.text = f"model open on {logic.provider}{note}; warming up in the background"
        except Exception as e:  # noqa: BLE001 - shown, and raised again by onApply
            self.status.text = f"{'server' if server else 'model'}: {e}"

    def _show_server_check(self, logic, thread):
        """The server check's outcome in the status line once it is in (polled: the check runs on
        its own thread, and Qt widgets are only touched from this one)."""
        if logic is not self._logic:
            return   # the settings changed meanwhile: that logic's outcome no longer matters
        if thread.is_alive():
            qt.QTimer.singleShot(200, lambda: self._show_server_check(logic, thread))
        elif logic.warm_up_outcome == "done":
            self.status.text = f"server {logic.server}: model {logic.server_model!r} ready"
        else:
            self.status.text = f"server: {logic.warm_up_outcome}"

    def _run(self, what, job):
        with slicer.util.tryWithErrorDisplay(f"SAM3D {what} failed", waitCursor=True):
            logic = self._logic_for_settings()
            logic.zoom_out = int(self.zoom.currentText)
            job(logic)
            note = f" ({logic.provider_note})" if logic.provider_note else ""
            self.status.text = f"{logic.message}, {logic.provider}{note}"

    def _last_point(self):
        node = self.point.currentNode()
        return node, max(0, node.GetNumberOfControlPoints() - 1) if node is not None else 0

    def onApply(self):
        node, i = self._last_point()
        self._run("segmentation", lambda lg: lg.segment(self.volume.currentNode(), node, i))

    def onRefine(self):
        node, i = self._last_point()
        positive = not self.negative.checked
        self._run("refinement", lambda lg: lg.refine(self.volume.currentNode(), node, i, positive=positive))

    def onUndo(self):
        self._run("undo", lambda lg: lg.undo(self.volume.currentNode()))

    def onBox(self):
        self._run("box", lambda lg: lg.segment_box(self.volume.currentNode(), self.roi.currentNode()))

    def onStart(self):
        self._run("start from segment", lambda lg: lg.start_from_segment(
            self.volume.currentNode(), self.segment.currentNode(), self.segment.currentSegmentID()))


class SAM3DSegmentModuleLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic slot; the work is in SAM3DSegmentLib.SAM3DSegmentLogic."""
