"""Load figures for libsam3d on Triton: concurrent remote clients against the local binding, one run.

Starts a server on free loopback ports with two models of the same package: one instance and one
instance per core (ONNX Runtime on one thread each), then:
  * the local binding (one thread, and all cores) clicking as a client would: the reference;
  * 1, 2, 4 and 8 concurrent remote clients on the per-core model (and 4 on the one-instance model,
    to show throughput growing with instances): session start (volume upload + START), the first
    click (encode), follow-up click latency p50/p95 and clicks per second;
  * bytes on the wire per follow-up click (a counting TCP proxy between client and server), on the
    sample volume and on a 512x512x300 CT-sized volume, against a whole-mask transfer;
  * server memory per live session (the instances' RSS before and after holding 8 sessions).

    python serve/triton/bench_serve.py --model models/demo-lesion [--json build/bench-serve.json]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

import launch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "examples", "data", "sample_ct_lesion.nii.gz")
CLICK = (95, 96, 11)
# follow-up clicks near the first, inside the lesion's region: the cached encoding answers them
NEAR = [(96, 96, 11), (94, 97, 11), (95, 95, 12), (97, 96, 10), (93, 96, 11), (95, 98, 11), (96, 94, 12),
        (94, 95, 10), (95, 96, 12), (96, 97, 11)]


def pct(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def read_sample():
    """The sample CT's voxels [i, j, k] and spacing (NIfTI-1, int16, read here to stay dependency-free)."""
    with gzip.open(SAMPLE, "rb") as f:
        data = f.read()
    dims = np.frombuffer(data, "<i2", 8, 40)
    code = int(np.frombuffer(data, "<i2", 1, 70)[0])
    dtype = {4: "<i2", 2: "u1", 8: "<i4", 16: "<f4"}[code]
    pix = np.frombuffer(data, "<f4", 8, 76)
    offset = int(np.frombuffer(data, "<f4", 1, 108)[0])
    n = int(dims[1]) * int(dims[2]) * int(dims[3])
    vox = np.frombuffer(data, dtype, n, offset).reshape((int(dims[1]), int(dims[2]), int(dims[3])), order="F")
    return vox, tuple(float(p) for p in pix[1:4])


class CountingProxy(threading.Thread):
    """A TCP relay on loopback that counts the bytes each way."""

    def __init__(self, upstream_port: int):
        super().__init__(daemon=True)
        self.upstream = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.up = self.down = 0
        self.lock = threading.Lock()

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b, up in ((c, s, True), (s, c, False)):
                threading.Thread(target=self.pump, args=(a, b, up), daemon=True).start()

    def pump(self, a, b, up):
        try:
            while True:
                d = a.recv(1 << 16)
                if not d:
                    break
                with self.lock:
                    if up:
                        self.up += len(d)
                    else:
                        self.down += len(d)
                b.sendall(d)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def reset(self):
        with self.lock:
            self.up = self.down = 0


def local_reference(package, threads, repeat, volume=SAMPLE, geometry=None):
    import sam3d
    m = sam3d.Model(sam3d.Runtime(), package, threads=threads)
    m.warm_up()
    vol = sam3d.Volume.read_nifti(volume) if geometry is None else sam3d.Volume.from_array(volume, geometry=geometry)
    first, follow = [], []
    for _ in range(repeat):
        s = sam3d.Session(m, vol)
        o = s.add_object()
        t = time.perf_counter()
        s.click(o, CLICK)
        first.append(time.perf_counter() - t)
        for p in NEAR:
            t = time.perf_counter()
            s.click(o, p)
            follow.append(time.perf_counter() - t)
        s.close()
    return {"first": first, "follow": follow}


def remote_run(url, model, clients, rounds=1, volume=SAMPLE, geometry=None):
    from sam3d.remote import RemoteSession
    starts, first, follow, spans, errors = [], [], [], [], []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client():
        try:
            barrier.wait()
            for _ in range(rounds):
                t0 = time.perf_counter()
                s = RemoteSession(url, volume, model=model, geometry=geometry)
                t1 = time.perf_counter()
                o = s.add_object()
                t2 = time.perf_counter()
                s.click(o, CLICK)
                t3 = time.perf_counter()
                lat = []
                for p in NEAR:
                    t = time.perf_counter()
                    s.click(o, p)
                    lat.append(time.perf_counter() - t)
                t4 = time.perf_counter()
                s.close()
                with lock:
                    starts.append(t1 - t0)
                    first.append(t3 - t2)
                    follow.extend(lat)
                    spans.append((t3, t4))
        except Exception as e:
            with lock:
                errors.append(repr(e))

    ths = [threading.Thread(target=client) for _ in range(clients)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]}")
    # the time some client was in its follow-up clicks (session starts and first clicks left out)
    wall, end = 0.0, float("-inf")
    for s0, s1 in sorted(spans):
        wall += max(0.0, s1 - max(s0, end))
        end = max(end, s1)
    return {"start": starts, "first": first, "follow": follow, "clicks_per_s": len(follow) / wall}


def wire_bytes(proxy, model, volume, geometry, click):
    from sam3d.remote import RemoteSession
    proxy.reset()
    s = RemoteSession(f"http://127.0.0.1:{proxy.port}", volume, model=model, geometry=geometry)
    start = proxy.up + proxy.down
    o = s.add_object()
    s.click(o, click)
    per = []
    for p in NEAR:
        proxy.reset()
        r = s.click(o, (p[0] - CLICK[0] + click[0], p[1] - CLICK[1] + click[1], p[2] - CLICK[2] + click[2]))
        per.append((proxy.up, proxy.down, r))
    s.close()
    up = statistics.median(u for u, _, _ in per)
    down = statistics.median(d for _, d, _ in per)
    r = per[0][2]
    return {"start_bytes": start, "click_up": up, "click_down": down, "box": [r.changed_lo, r.changed_hi],
            "voxels": r.voxels}


def memory_per_session(server, url, model, volume, geometry, n=8):
    from sam3d.remote import RemoteSession
    pids = server.stub_pids()
    before = sum(launch.rss_bytes(p) for p in pids)
    shm_before = sum(launch.rss_bytes(p, "RssShmem") for p in pids)
    sessions = []
    for _ in range(n):
        s = RemoteSession(url, volume, model=model, geometry=geometry)
        s.click(s.add_object(), CLICK)
        sessions.append(s)
    during = sum(launch.rss_bytes(p) for p in pids)
    for s in sessions:
        s.close()
    after = sum(launch.rss_bytes(p) for p in pids)
    # the Python backend's shared-memory pool (requests arrive through it) keeps its largest size
    shm_after = sum(launch.rss_bytes(p, "RssShmem") for p in pids)
    return {"before": before, "during": during, "after": after, "per_session": (during - before) / n,
            "shm_growth": shm_after - shm_before}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo-lesion"), help="the model package")
    ap.add_argument("--clients", default="1,2,4,8", help="concurrent client counts to run")
    ap.add_argument("--repeat", type=int, default=3, help="sessions per client (and local reference runs)")
    ap.add_argument("--json", default=os.path.join(ROOT, "build", "bench-serve.json"), help="figures as JSON")
    a = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    work = tempfile.mkdtemp(prefix="sam3d-bench-serve-")
    repo = launch.write_repository(os.path.join(work, "repository"),
                                   {"per_core": {"package": a.model, "instances": cores},
                                    "one": {"package": a.model, "instances": 1}},
                                   threads=1, max_sessions=16, idle_timeout=120)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"# {cpu}, {cores} cores; model {os.path.basename(a.model)}; sample volume 192x192x20; "
          f"server: {cores} instances x 1 thread (and 1 instance); loopback")
    out = {"cpu": cpu, "cores": cores}
    out["local_1"] = local_reference(a.model, 1, a.repeat)
    out["local_all"] = local_reference(a.model, 0, a.repeat)
    with launch.Server(repo, work) as server:
        server.wait_ready(["per_core", "one"])
        http = "http://" + server.http_url
        grpc = "grpc://" + server.grpc_url
        remote_run(http, "per_core", 1)   # first requests of each instance
        for c in [int(x) for x in a.clients.split(",")]:
            out[f"http_{c}"] = remote_run(http, "per_core", c, a.repeat)
        out["grpc_1"] = remote_run(grpc, "per_core", 1, a.repeat)
        out["one_instance_4"] = remote_run(http, "one", 4, a.repeat)
        proxy = CountingProxy(server.http_port)
        proxy.start()
        out["bytes_sample"] = wire_bytes(proxy, "per_core", SAMPLE, None, CLICK)
        vox, _ = read_sample()
        big = np.full((512, 512, 300), -1000, np.int16)
        reps = [int(np.ceil(n / m)) for n, m in zip(big.shape, vox.shape)]
        big[:] = np.tile(vox, reps)[:512, :512, :300]
        import sam3d
        geom = sam3d.Geometry(big.shape, (0.75, 0.75, 1.0), (0.0, 0.0, 0.0), np.eye(3))
        out["bytes_large"] = wire_bytes(proxy, "per_core", big, geom, CLICK)
        out["large_local_1"] = local_reference(a.model, 1, a.repeat, big, geom)
        out["large_http_1"] = remote_run(http, "per_core", 1, a.repeat, big, geom)
        out["memory_sample"] = memory_per_session(server, http, "per_core", SAMPLE, None)
        out["memory_large"] = memory_per_session(server, http, "per_core", big, geom, n=4)
    report(out)
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(f"# figures: {a.json}")


def report(o):
    ms = lambda xs, q: f"{1000 * pct(xs, q):.1f}"   # noqa: E731
    print("\n| run | session start ms (p50) | first click ms (p50) | follow-up p50 ms | follow-up p95 ms | clicks/s |")
    print("|---|---|---|---|---|---|")
    for k, name in [("local_1", "local binding, 1 thread"), ("local_all", "local binding, all cores"),
                    ("large_local_1", "512x512x300: local binding, 1 thread")]:
        r = o[k]
        print(f"| {name} | - | {ms(r['first'], 50)} | {ms(r['follow'], 50)} | {ms(r['follow'], 95)} | "
              f"{1 / statistics.mean(r['follow']):.1f} |")
    for k in [k for k in o if k.startswith(("http_", "grpc_", "one_", "large_http"))]:
        r = o[k]
        name = {"grpc_1": "gRPC, 1 client", "one_instance_4": "HTTP, 4 clients, 1 instance",
                "large_http_1": "512x512x300: HTTP, 1 client"}.get(
            k, f"HTTP, {k.split('_')[1]} client(s)")
        print(f"| {name} | {ms(r['start'], 50)} | {ms(r['first'], 50)} | {ms(r['follow'], 50)} | "
              f"{ms(r['follow'], 95)} | {r['clicks_per_s']:.1f} |")
    for name, l1, r1 in [("sample", o["local_1"]["follow"], o["http_1"]["follow"]),
                         ("512x512x300", o["large_local_1"]["follow"], o["large_http_1"]["follow"])]:
        print(f"\nremote/local follow-up, {name} (1 client vs 1 thread): p50 {pct(r1, 50) / pct(l1, 50):.2f}x, "
              f"p95 {1000 * (pct(r1, 95) - pct(l1, 95)):+.1f} ms")
    print("\n| volume | request B/click | reply B/click | changed box | whole mask uint8 B | ratio |")
    print("|---|---|---|---|---|---|")
    for k, dims in [("bytes_sample", (192, 192, 20)), ("bytes_large", (512, 512, 300))]:
        b = o[k]
        whole = int(np.prod(dims))
        per = b["click_up"] + b["click_down"]
        print(f"| {'x'.join(map(str, dims))} | {b['click_up']:.0f} | {b['click_down']:.0f} | "
              f"{b['box'][0]}..{b['box'][1]} | {whole} | {whole / per:.0f}x |")
    for k, name in [("memory_sample", "192x192x20 NIfTI"), ("memory_large", "512x512x300 int16 array")]:
        m = o[k]
        print(f"server memory per live session ({name}): {m['per_session'] / 2**20:.1f} MB "
              f"(instances {m['before'] / 2**20:.0f} MB idle, {m['during'] / 2**20:.0f} MB with sessions, "
              f"{m['after'] / 2**20:.0f} MB after they ended, of which {m['shm_growth'] / 2**20:.0f} MB the "
              "backend's shared-memory pool grew by)")


if __name__ == "__main__":
    sys.exit(main())
