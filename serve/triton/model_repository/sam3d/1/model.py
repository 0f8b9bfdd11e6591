"""Triton Python-backend model: one libsam3d session per sequence (correlation ID).

The work is `sam3d.hosting.SessionTable` (the libsam3d Python binding); this file only moves
tensors between Triton and it. Protocol: `sam3d.wire`. Parameters (config.pbtxt): package, device,
threads, memory_budget, max_sessions, max_voxels, warm_up, ort_library.
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from sam3d import hosting, wire


def _flag(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return t is not None and bool(np.asarray(t.as_numpy()).ravel()[0])


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if args.get("model_instance_kind") == "GPU":   # KIND_GPU instances: the GPU Triton gave this one
            params.setdefault("device_id", str(args.get("model_instance_device_id", "0")))
        idle_us = int(config.get("sequence_batching", {}).get("max_sequence_idle_microseconds", 0) or 0)
        # Triton's default idle timeout (1 s) when the config sets none; the table frees sessions at
        # the same moment Triton forgets their sequence
        self.table = hosting.open_table(params, idle_timeout=(idle_us or 1_000_000) / 1e6,
                                        base_dir=args["model_repository"], name=args["model_name"])
        self.reaper = hosting.Reaper(self.table)
        self.reaper.start()

    def execute(self, requests):
        responses = []
        for request in requests:
            # one request's failure is its own: an exception out of execute() would fail every
            # request of the batch, other clients' included
            try:
                responses.append(self._one(request))
            except Exception as e:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"SAM3D_STATUS_INTERNAL: {type(e).__name__}: {e}")))
        return responses

    def _one(self, request):
        inputs = {}
        for name in wire.INPUTS:
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is not None:
                a = t.as_numpy()
                inputs[name] = a[0] if a.ndim > 1 or a.shape[0] == 1 else a  # the batch dimension
        cid = request.correlation_id()   # an int, or a string for string sequence IDs
        if cid in (0, ""):
            t = pb_utils.get_input_tensor_by_name(request, "CORRID")
            cid = np.asarray(t.as_numpy()).ravel()[0].item() if t is not None else 0
        out = self.table.handle(cid, _flag(request, "START"), _flag(request, "END"), inputs)
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(name, np.expand_dims(value, 0)) for name, value in out.items()])

    def finalize(self):
        self.reaper.stop()
        self.table.close()
