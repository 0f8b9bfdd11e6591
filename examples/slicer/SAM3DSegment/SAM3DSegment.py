"""3D Slicer scripted module: one click in a tumour -> its 3D segment, computed by libsam3d.

The thin application layer only: the widget picks a volume, a markups point, the model package and
the device, and calls `SAM3DSegmentLib.SAM3DSegmentLogic`, which needs nothing but MRML (it is
tested headless with the slicer-core package). Requires the `sam3d` Python binding in Slicer's
Python (`PythonSlicer -m pip install /path/to/libsam3d/python`) and libsam3d + ONNX Runtime
(`make install`, or SAM3D_LIBRARY / SAM3D_ORT_LIBRARY).
"""
import os

import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleWidget)

from SAM3DSegmentLib import SAM3DSegmentLogic


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
        form.addRow("Model package:", self.model)
        self.device = qt.QComboBox()
        self.device.addItems(["cpu", "cuda", "tensorrt"])
        self.device.connect("currentIndexChanged(int)", lambda _i: self._prepare())
        form.addRow("Device:", self.device)
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
        self.status.text = f"{stage} {'done' if done else '...'}"
        slicer.app.processEvents()

    def enter(self):
        self._prepare()

    def _logic_for_settings(self):
        """The logic for the current settings: the open one, or a new one (the old one's warm-up stopped)."""
        gpu = {"gpu_memory_limit": int(self.memory.value) << 20, "cuda_tf32": bool(self.tf32.checked)}
        key = (self.model.text, self.device.currentText, tuple(sorted(gpu.items())))
        if self._logic is None or self._logic_key != key:
            if self._logic is not None:
                self._logic.stop_warm_up()
                self._logic = None   # a new model that fails to open leaves no stale logic behind
            self._logic = SAM3DSegmentLogic(self.model.text, device=self.device.currentText,
                                            progress=self._progress, **gpu)
            self._logic_key = key
        return self._logic

    def _prepare(self):
        """Open the model and warm it up in the background; a failure here only shows in the status
        line (the Segment button reports it in full)."""
        if not self.model.text:
            return
        try:
            self._logic_for_settings().start_warm_up()
            self.status.text = "model open, warming up in the background"
        except Exception as e:  # noqa: BLE001 - shown, and raised again by onApply
            self.status.text = f"model: {e}"

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
