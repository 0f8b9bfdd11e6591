"""Start Triton Inference Server on loopback with the libsam3d model repository.

The server is the `tritonserver` binary that PyPI's nvidia-pytriton wheel ships (Triton 2.5x with
the Python backend; CPU-only here, GPU instances in NVIDIA's Triton container). This script runs in
the environment that holds that wheel, tritonclient and the libsam3d binding (`make serve` builds
it: .venv-triton), and:
  1. writes a model repository from model_repository/ with the parameters given (package, device,
     threads, instances, sessions, idle timeout), one model per --model NAME=PACKAGE;
  2. builds a backend folder: the wheel's Python backend with the stub for this Python;
  3. starts tritonserver with the venv first on PATH and the wheel's libraries on
     LD_LIBRARY_PATH, and waits until the models are ready.

    python serve/triton/launch.py --model sam3d=models/demo-lesion --http-port 8000 --grpc-port 8001

Tests and benchmarks import `Server` and choose free ports.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from typing import Dict, List, Optional, Union

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "model_repository", "sam3d")


def pytriton_dir() -> str:
    """The wheel's tritonserver folder (bin/, backends/, python_backend_stubs/)."""
    try:
        import pytriton
    except ImportError as e:
        raise SystemExit(f"nvidia-pytriton is not installed in {sys.prefix} ({e}); `make serve` installs it")
    return os.path.join(os.path.dirname(pytriton.__file__), "tritonserver")


def wheel_libs() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(pytriton_dir())), "nvidia_pytriton.libs")


def make_backends(dest: str) -> str:
    """A backend folder holding the Python backend and the stub for this interpreter's version."""
    src = pytriton_dir()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = os.path.join(src, "python_backend_stubs", py, "triton_python_backend_stub")
    if not os.path.exists(stub):
        raise SystemExit(f"the pytriton wheel has no Python backend stub for Python {py}")
    out = os.path.join(dest, "python")
    os.makedirs(out, exist_ok=True)
    for path in (os.path.join(src, "backends", "python", "libtriton_python.so"),
                 os.path.join(src, "backends", "python", "triton_python_backend_utils.py"), stub):
        # copied beside and renamed: a stub of a server that is still stopping may be running
        target = os.path.join(out, os.path.basename(path))
        shutil.copy2(path, target + ".part")
        os.replace(target + ".part", target)
    return dest


def model_config(name: str, package: str, *, device: str = "cpu", threads: int = 1, instances: int = 2,
                 max_sessions: int = 16, idle_timeout: float = 600.0, memory_budget: int = 0,
                 max_voxels: int = 1 << 29, warm_up: bool = True, ort_library: Optional[str] = None) -> str:
    """The template's config.pbtxt with these settings, checked by parsing it with tritonclient's
    model-config protobuf (text format)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    with open(os.path.join(TEMPLATE, "config.pbtxt")) as f:
        config = text_format.Parse(f.read(), model_config_pb2.ModelConfig())
    config.name = name
    # sequence slots: many more than the sessions, so STARTs are refused rather than queued even
    # while refused sequences wait for their END (the template's reasons)
    config.max_batch_size = max(config.max_batch_size, 8 * max_sessions)
    config.sequence_batching.max_sequence_idle_microseconds = int(idle_timeout * 1e6)
    config.instance_group[0].count = instances
    params = {"package": os.path.abspath(package), "device": device, "threads": str(threads),
              "max_sessions": str(max_sessions), "memory_budget": str(memory_budget), "max_voxels": str(max_voxels),
              "warm_up": "1" if warm_up else "0"}
    if ort_library:
        params["ort_library"] = os.path.abspath(ort_library)
    for k, v in params.items():
        config.parameters[k].string_value = v
    return text_format.MessageToString(config)


def write_repository(dest: str, models: Dict[str, Union[str, dict]], **settings) -> str:
    """A model repository at `dest` with one libsam3d model per name: a package path, or a dict of
    `package` and settings of its own (those of `model_config`) over the shared `settings`."""
    shutil.rmtree(dest, ignore_errors=True)
    for name, spec in models.items():
        spec = {"package": spec} if isinstance(spec, (str, os.PathLike)) else dict(spec)
        d = os.path.join(dest, name)
        os.makedirs(os.path.join(d, "1"))
        shutil.copy2(os.path.join(TEMPLATE, "1", "model.py"), os.path.join(d, "1", "model.py"))
        with open(os.path.join(d, "config.pbtxt"), "w") as f:
            f.write(model_config(name, str(spec.pop("package")), **{**settings, **spec}))
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A tritonserver process on 127.0.0.1 serving `repository`; `stop()` ends it."""

    def __init__(self, repository: str, workdir: str, *, http_port: int = 0, grpc_port: int = 0,
                 log: Optional[str] = None, env: Optional[dict] = None):
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        backends = make_backends(os.path.join(workdir, "backends"))
        exe = os.path.join(pytriton_dir(), "bin", "tritonserver")
        e = dict(os.environ if env is None else env)
        e["PATH"] = os.path.dirname(sys.executable) + os.pathsep + e.get("PATH", "")
        # the wheel's bundled libraries, then this interpreter's libpython (the stub links it)
        libs = [wheel_libs(), sysconfig.get_config_var("LIBDIR") or "", e.get("LD_LIBRARY_PATH", "")]
        e["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        self.args = [exe, f"--model-repository={os.path.abspath(repository)}",
                     f"--backend-directory={os.path.abspath(backends)}",
                     "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                     "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                     "--allow-metrics=false", "--strict-readiness=true", "--exit-timeout-secs=5",
                     # explicit model control, so `stop` can unload the models before the server
                     # exits: Triton spends its exit timeout waiting for idle HTTP keep-alive
                     # connections, which would leave no time to unload them gracefully
                     "--model-control-mode=explicit", "--load-model=*",
                     # volumes arrive whole at START: grow the backend's shared memory in large steps
                     "--backend-config=python,shm-growth-byte-size=67108864"]
        self.log_path = log or os.path.join(workdir, "tritonserver.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=e,
                                     start_new_session=True)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, models: List[str], timeout: float = 300.0):
        import tritonclient.http as th

        client = th.InferenceServerClient(self.http_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}: {self.tail()}")
            try:
                if all(client.is_model_ready(m) for m in models):
                    return self
            except Exception:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"tritonserver not ready after {timeout:g} s: {self.tail()}")

    def tail(self, n: int = 4000) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")

    def stub_pids(self) -> List[int]:
        """The Python-backend stub processes (one per model instance)."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if b"triton_python_backend_stub" in cmd and ppid == self.proc.pid:
                pids.append(int(d))
        return sorted(pids)

    def unload_models(self, timeout: float = 30.0):
        """Unload every model (their `finalize` frees the sessions, temporary folders and the Python
        backend's shared memory) and wait until they are gone."""
        import tritonclient.http as th

        client = th.InferenceServerClient(self.http_url, connection_timeout=5.0, network_timeout=timeout)
        try:
            for m in client.get_model_repository_index():
                if m.get("state") == "READY":
                    client.unload_model(m["name"])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(
                    m.get("state") in ("READY", "UNLOADING") for m in client.get_model_repository_index()):
                time.sleep(0.1)
        finally:
            client.close()

    def stop(self, timeout: float = 30.0):
        """Unload the models, then SIGTERM to the server alone; the whole group is killed only if it
        does not exit."""
        if self.proc.poll() is None:
            try:
                self.unload_models(timeout)
            except Exception:   # a server that does not answer still gets its SIGTERM
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # stubs left behind by a server that did not stop
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (or another /proc/PID/status field given in kB), bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", metavar="NAME=PACKAGE",
                    help="a model to serve, named for clients (repeatable; default sam3d=models/demo-lesion)")
    ap.add_argument("--workdir", default="build/triton", help="where the repository, backends and log go")
    ap.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port on 127.0.0.1")
    ap.add_argument("--grpc-port", type=int, default=8001, help="gRPC port on 127.0.0.1")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "tensorrt", "openvino"),
                    help="execution provider (openvino: with an ONNX Runtime that has it, see docs/c-api.md)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per instance (0: all cores)")
    ap.add_argument("--instances", type=int, default=2, help="model instances (processes), each with its sessions")
    ap.add_argument("--max-sessions", type=int, default=16, help="live sessions per instance")
    ap.add_argument("--idle-timeout", type=float, default=600.0, help="seconds before an idle session is freed")
    ap.add_argument("--memory-budget", type=int, default=0, help="libsam3d's budget for one volume array, bytes")
    ap.add_argument("--max-voxels", type=int, default=1 << 29, help="voxels all live sessions of an instance may hold")
    ap.add_argument("--ort-library", help="libonnxruntime.so (default: SAM3D_ORT_LIBRARY, then libsam3d's search)")
    a = ap.parse_args(argv)
    models = {}
    for m in a.model or ["sam3d=models/demo-lesion"]:
        name, eq, package = m.partition("=")
        if not eq or not name or not package or not all(c.isalnum() or c in "-_." for c in name) or name[0] == ".":
            ap.error(f"--model {m!r}: NAME=PACKAGE, NAME of letters, digits, '-', '_' and '.'")
        models[name] = package
    os.makedirs(a.workdir, exist_ok=True)
    repo = write_repository(os.path.join(a.workdir, "repository"), models, device=a.device, threads=a.threads,
                            instances=a.instances, max_sessions=a.max_sessions, idle_timeout=a.idle_timeout,
                            memory_budget=a.memory_budget, max_voxels=a.max_voxels, ort_library=a.ort_library)
    server = Server(repo, a.workdir, http_port=a.http_port, grpc_port=a.grpc_port)

    def terminate(*_):   # tritonserver runs in a session of its own: a kill of this script stops it too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    try:
        server.wait_ready(list(models))
        print(f"serving {', '.join(models)}: HTTP {server.http_url}, gRPC {server.grpc_url} "
              f"(log: {server.log_path}); Ctrl-C stops", flush=True)
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return server.proc.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
