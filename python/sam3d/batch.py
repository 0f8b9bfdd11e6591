"""Segment a folder of volumes on a Triton server running libsam3d (serve/triton), from a clicks file.

    python -m sam3d.batch --server http://gpu-server:8000 --clicks clicks.json scans/ [--parallel 4]
        [--model sam3d] [--suffix _mask] [--timeout 600] [--quiet]

clicks.json maps each volume's file name (relative to the folder; .nii or .nii.gz) to its prompts:
a list of clicks (one object; voxel indices; positive), or an object with the coordinates and one
list of clicks per object, where a click is [x, y, z] or {"point": [x, y, z], "positive": false}:

    {
      "ct1.nii.gz": [[95, 96, 11], [99, 100, 12]],
      "ct2.nii":    {"coord": "ras",
                     "objects": [[[70.8, 187.5, -782.5]],
                                 [[66.9, 191.4, -780.5], {"point": [60, 190, -780], "positive": false}]]}
    }

"coord" is ijk (voxel index, the default), lps or ras (millimetres). Each object's mask is written
beside its volume by the server's libsam3d, with the volume's geometry: ct1_mask.nii.gz for the first
object, ct2_mask-1.nii.gz for the second, and so on.

The whole clicks file is checked before anything is sent; every problem is reported with its volume
and the exit code is 2. N volumes are in flight at once, one session each, so the server's model
instances share them. A volume that fails (the server's status and message, or no answer) is
reported in its row and leaves none of its masks behind (masks of an earlier run are kept); the
others go on. Progress goes to stderr, a summary table to stdout; the exit code is 0 when every
volume succeeded and 1 when any failed.

As a function (what the command runs):

    from sam3d.batch import run
    for r in run("http://gpu-server:8000", "scans/", "clicks.json", parallel=4):
        print(r.volume, r.status, r.voxels, r.masks)

Needs numpy and tritonclient (through `sam3d.remote`); libsam3d itself is not needed here.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import math
import os
import secrets
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import EmptyMaskWarning, Error
from .remote import RemoteSession

__all__ = ["run", "load_clicks", "summary", "main", "Click", "Job", "VolumeResult", "ClicksError", "Interrupted"]

COORDS = ("ijk", "lps", "ras")
EXTENSIONS = (".nii.gz", ".nii")
OK = "ok"
#: status of a volume the batch never started because it was interrupted
NOT_STARTED = "cancelled"


class ClicksError(ValueError):
    """The clicks file is unusable; `problems` lists each one, with its volume."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Interrupted(KeyboardInterrupt):
    """The batch was interrupted (Ctrl-C): running volumes were cancelled and cleaned up, the rest
    not started; `records` holds every volume's record all the same."""

    def __init__(self, records: List["VolumeResult"]):
        super().__init__("the batch was interrupted")
        self.records = records


@dataclass(frozen=True)
class Click:
    point: Tuple[float, float, float]
    positive: bool = True


@dataclass(frozen=True)
class Job:
    """One volume of the clicks file, checked: its file, coordinates, clicks per object, mask files."""
    volume: str
    path: str
    coord: str
    objects: Tuple[Tuple[Click, ...], ...]
    masks: Tuple[str, ...]

    @property
    def clicks(self) -> int:
        return sum(len(o) for o in self.objects)


@dataclass
class VolumeResult:
    """What became of one volume. `status` is "ok", the library's status name from the server
    (SAM3D_STATUS_OUT_OF_BOUNDS, SAM3D_STATUS_IO for no answer, ...), another error's type name, or
    "cancelled" for a volume an interrupted batch never started."""
    volume: str
    path: str
    objects: int
    clicks: int                                        # in the clicks file
    clicks_sent: int = 0                               # answered by the server
    voxels: List[int] = field(default_factory=list)   # per object, once its mask is written
    seconds: float = 0.0
    status: str = "pending"
    message: str = ""
    masks: List[str] = field(default_factory=list)    # the files written (none when it failed)

    @property
    def ok(self) -> bool:
        return self.status == OK


# -- the clicks file ---------------------------------------------------------------------------------

class _Object(dict):
    """A JSON object that remembers the names it was given twice: JSON keeps only the last, and a
    volume's clicks silently dropped would be a wrong result nobody notices."""

    def __init__(self, pairs):
        super().__init__(pairs)
        seen = set()
        self.twice = []
        for k, _ in pairs:
            if k in seen:
                self.twice.append(k)
            seen.add(k)


def _stem(name: str) -> Optional[str]:
    base = os.path.basename(name)
    for ext in EXTENSIONS:
        if base.lower().endswith(ext) and len(base) > len(ext):
            return base[:-len(ext)]
    return None


def _number(v) -> bool:
    # JSON's true/false arrive as bool, which Python counts as a number
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_CLICK_FORM = 'a click is [x, y, z] or {"point": [x, y, z], "positive": false}'


def _click(v, where: str, problems: List[str]) -> Optional[Click]:
    positive = True
    if isinstance(v, dict):
        unknown = sorted(set(v) - {"point", "positive"})
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; {_CLICK_FORM}")
            return None
        if "positive" in v:
            if not isinstance(v["positive"], bool):
                problems.append(f"{where}: \"positive\" is {json.dumps(v['positive'])}, not true or false")
                return None
            positive = v["positive"]
        if "point" not in v:
            problems.append(f"{where}: no \"point\"; {_CLICK_FORM}")
            return None
        v = v["point"]
    if not (isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v)):
        problems.append(f"{where}: {json.dumps(v)} is not three finite numbers; {_CLICK_FORM}")
        return None
    return Click(tuple(float(x) for x in v), positive)


def _clicks(v, where: str, problems: List[str]) -> Optional[Tuple[Click, ...]]:
    if not isinstance(v, list) or not v:
        problems.append(f"{where}: expected a non-empty list of clicks, got {json.dumps(v)[:80]}")
        return None
    out = [_click(c, f"{where}[{j}]", problems) for j, c in enumerate(v)]
    return None if None in out else tuple(out)


def _prompts(name: str, spec, problems: List[str]):
    """(coord, objects) of one volume's entry, or None after adding its problems."""
    if isinstance(spec, list):
        objects = _clicks(spec, f"{name}: clicks", problems)
        return None if objects is None else ("ijk", (objects,))
    if not isinstance(spec, dict):
        problems.append(f"{name}: expected a list of clicks or {{\"coord\": ..., \"objects\": [...]}}, "
                        f"got {json.dumps(spec)[:80]}")
        return None
    n = len(problems)
    problems += [f"{name}: {json.dumps(k)} given twice" for k in getattr(spec, "twice", ())]
    unknown = sorted(set(spec) - {"coord", "objects"})
    if unknown:
        problems.append(f"{name}: unknown key(s) {', '.join(map(repr, unknown))}: \"coord\" and \"objects\" only")
    coord = spec.get("coord", "ijk")
    if coord not in COORDS:
        problems.append(f"{name}: coord {json.dumps(coord)}: one of {', '.join(COORDS)}")
    objs = spec.get("objects")
    objects = []
    if not isinstance(objs, list) or not objs:
        problems.append(f"{name}: \"objects\" must be a non-empty list, one list of clicks per object")
    else:
        objects = [_clicks(o, f"{name}: objects[{k}]", problems) for k, o in enumerate(objs)]
    return None if len(problems) > n else (coord, tuple(objects))


def load_clicks(clicks: Union[str, os.PathLike, dict], folder: str, suffix: str = "_mask") -> List[Job]:
    """The jobs of a clicks file (a path to its JSON, or the mapping itself) for the volumes in
    `folder`, in the file's order. Raises `ClicksError` listing every problem: unreadable JSON, a
    volume file missing, a malformed entry or click, two outputs on one file."""
    if isinstance(clicks, (str, os.PathLike)):
        try:
            with open(clicks, encoding="utf-8") as f:
                data = json.load(f, object_pairs_hook=_Object)
        except (OSError, UnicodeDecodeError) as e:
            raise ClicksError([f"{os.fspath(clicks)}: {e}"])
        except ValueError as e:
            raise ClicksError([f"{os.fspath(clicks)}: not valid JSON: {e}"])
    else:
        data = clicks
    if not isinstance(data, dict):
        raise ClicksError(["the clicks file must be a JSON object mapping volume file names to their clicks"])
    if not data:
        raise ClicksError(["the clicks file names no volumes"])
    if os.sep in suffix or (os.altsep and os.altsep in suffix):
        raise ClicksError([f"the mask suffix {suffix!r} holds a path separator"])
    if not os.path.isdir(folder):
        raise ClicksError([f"{folder}: not a folder"])
    problems: List[str] = [f"{k}: named twice in the clicks file" for k in getattr(data, "twice", ())]
    jobs = []
    for name, spec in data.items():
        path = os.path.join(folder, name)
        stem = _stem(name)
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            problems.append(f"{name}: the name must be relative to the folder {folder}, inside it")
        elif stem is None:
            problems.append(f"{name}: not a NIfTI file name (.nii or .nii.gz)")
        elif not os.path.exists(path):
            problems.append(f"{name}: no such file in {folder}")
        elif not os.path.isfile(path):
            problems.append(f"{name}: not a file")
        prompts = _prompts(name, spec, problems)
        if prompts is None or stem is None:
            continue
        coord, objects = prompts
        where = os.path.dirname(path)
        masks = tuple(os.path.join(where, f"{stem}{suffix}{'' if k == 0 else f'-{k}'}.nii.gz")
                      for k in range(len(objects)))
        jobs.append(Job(name, path, coord, objects, masks))
    # a mask must not overwrite a volume of the batch, nor another volume's mask
    inputs = {os.path.realpath(os.path.join(folder, n)): n for n in data}
    seen: Dict[str, str] = {}
    for job in jobs:
        for m in job.masks:
            key = os.path.realpath(m)
            if key in inputs:
                problems.append(f"{job.volume}: its mask {os.path.basename(m)} would overwrite the volume "
                                f"{inputs[key]} (choose another --suffix)")
            elif key in seen:
                problems.append(f"{job.volume}: its mask {os.path.basename(m)} is also {seen[key]}'s mask")
            seen.setdefault(key, job.volume)
    if problems:
        raise ClicksError(problems)
    return jobs


# -- the batch ---------------------------------------------------------------------------------------

class _Stop:
    """The batch's interruption: no volume starts after it, and the sessions running are cancelled."""

    def __init__(self):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._live = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self):
        with self._lock:
            self._event.set()
            live = list(self._live)
        for s in live:
            s.cancel()

    def add(self, session):
        with self._lock:
            self._live.add(session)
        if self._event.is_set():   # interrupted while this session was starting
            session.cancel()

    def discard(self, session):
        with self._lock:
            self._live.discard(session)


def _cancelled() -> Error:
    return Error(12, "the batch was interrupted", name="SAM3D_STATUS_CANCELLED")


def _remove_staged(part: str):
    # the staged file and anything its writer left beside it under the same (random) name
    for p in glob.glob(glob.escape(part) + "*"):
        try:
            os.remove(p)
        except OSError:
            pass


def _segment(job: Job, server: str, model: str, timeout: float, stop: _Stop,
             progress: Optional[Callable[[str, VolumeResult], None]]) -> VolumeResult:
    rec = VolumeResult(job.volume, job.path, len(job.objects), job.clicks)
    if stop.is_set():
        rec.status, rec.message = NOT_STARTED, "not started: the batch was interrupted"
        if progress:
            progress("done", rec)
        return rec
    t0 = time.monotonic()
    # masks go to staged names first and are renamed together at the end, so a volume that fails
    # half-way neither leaves some of its masks nor destroys those of an earlier run
    token = secrets.token_hex(4)
    staged: List[Tuple[str, str]] = []
    session = None
    try:
        session = RemoteSession(server, job.path, model=model, timeout=timeout)
        stop.add(session)
        for clicks, final in zip(job.objects, job.masks):
            if stop.is_set():
                raise _cancelled()
            obj = session.add_object()
            for c in clicks:
                if stop.is_set():
                    raise _cancelled()
                session.click(obj, c.point, coord=job.coord, positive=c.positive)
                rec.clicks_sent += 1
                if progress:
                    progress("click", rec)
            part = f"{final}.part-{token}"
            staged.append((part, final))
            session.write_mask(obj, part)
            rec.voxels.append(int(session.mask(obj).sum(dtype=np.int64)))
        for part, final in staged:
            os.replace(part, final)
            rec.masks.append(final)
        rec.status = OK
    except Error as e:
        rec.status, rec.message = e.name, e.message
    except Exception as e:
        rec.status, rec.message = type(e).__name__, str(e)
    finally:
        if session is not None:
            stop.discard(session)
            try:
                session.close()
            except Exception:
                pass   # the server ends the sequence after its idle timeout all the same
        if rec.status != OK:
            for part, _ in staged:
                _remove_staged(part)
            for final in rec.masks:   # renamed before a later rename failed
                try:
                    os.remove(final)
                except OSError:
                    pass
            rec.masks, rec.voxels = [], []
        rec.seconds = time.monotonic() - t0
    if progress:
        progress("done", rec)
    return rec


def run(server: str, folder: str, clicks: Union[str, os.PathLike, dict], parallel: int = 2,
        model: str = "sam3d", suffix: str = "_mask",
        progress: Optional[Callable[[str, VolumeResult], None]] = None, *,
        timeout: float = 600.0) -> List[VolumeResult]:
    """Segment the volumes of `clicks` (a clicks file's path, or its mapping) in `folder` on the
    Triton server at `server` (http://host:port, grpc://host:port or host:port), model `model`,
    `parallel` volumes at once. Returns one `VolumeResult` per volume in the clicks file's order.

    Raises `ClicksError` before sending anything when the clicks file is unusable, and `Interrupted`
    (with the records) on Ctrl-C. `progress(event, record)`, called from the worker threads: "queued"
    for every volume before any starts, "click" after each click answered, "done" when a volume has
    finished (its record complete). `timeout`: seconds to wait for the server's answer to a request."""
    if int(parallel) < 1:
        raise ValueError(f"parallel {parallel}: at least 1")
    jobs = load_clicks(clicks, folder, suffix)
    records: List[Optional[VolumeResult]] = [None] * len(jobs)
    if progress:
        for job in jobs:
            progress("queued", VolumeResult(job.volume, job.path, len(job.objects), job.clicks))
    stop = _Stop()
    with concurrent.futures.ThreadPoolExecutor(min(int(parallel), len(jobs)), thread_name_prefix="sam3d-batch") as pool:
        futures = {pool.submit(_segment, job, server, model, timeout, stop, progress): i for i, job in enumerate(jobs)}
        try:
            for f in concurrent.futures.as_completed(futures):
                records[futures[f]] = f.result()
        except KeyboardInterrupt:
            stop.set()
            for f, i in futures.items():
                records[i] = f.result()
            raise Interrupted(records)
    return records


# -- progress and the summary ------------------------------------------------------------------------

def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _status_text(r: VolumeResult) -> str:
    if r.ok:
        return OK
    message = " ".join(r.message.split())
    return f"{r.status}: {message}" if message else r.status


class _Progress:
    """Counts what `run` reports (any thread)."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.volumes = self.clicks = self.done = self.clicks_done = self.failed = 0

    def __call__(self, event: str, rec: VolumeResult):
        with self.lock:
            if event == "queued":
                self.volumes += 1
                self.clicks += rec.clicks
            elif event == "click":
                self.clicks_done += 1
            elif event == "done":
                self.done += 1
                self.failed += not rec.ok
                # clicks never sent will not come: the bar's click count still reaches its end
                self.clicks_done += rec.clicks - rec.clicks_sent
            self.show(event, rec)

    def show(self, event: str, rec: VolumeResult):
        pass

    def close(self):
        pass


class _Lines(_Progress):
    """One line per finished volume: for a log, or stderr that is not a terminal."""

    def show(self, event, rec):
        # after an interruption the summary lists the volumes never started; a line each is noise
        if event != "done" or rec.status == NOT_STARTED:
            return
        if rec.ok:
            what = (f"ok, {rec.objects} object{'s' * (rec.objects != 1)}, {rec.clicks_sent} "
                    f"click{'s' * (rec.clicks_sent != 1)}, {rec.seconds:.1f} s")
        else:
            what = _status_text(rec)
        self.stream.write(f"[{self.done}/{self.volumes}] {rec.volume}: {what}\n")
        self.stream.flush()


class _Bar(_Progress):
    """A bar redrawn in place with \\r; a failed volume gets a line of its own above it. A ticker
    redraws it every second so the clock moves during a long upload or click."""

    def __init__(self, stream):
        super().__init__(stream)
        self._shown = 0
        self._closed = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="sam3d-batch-bar", daemon=True)
        self._ticker.start()

    def _tick(self):
        while not self._closed.wait(1.0):
            with self.lock:
                if self.volumes and not self._closed.is_set():
                    self._draw()

    def _line(self) -> str:
        elapsed = time.monotonic() - self.t0
        text = (f" {self.done}/{self.volumes} volumes  {self.clicks_done}/{self.clicks} clicks  "
                f"{self.failed} failed  {_clock(elapsed)}")
        if 0 < self.done < self.volumes:
            text += f"  ~{_clock(elapsed / self.done * (self.volumes - self.done))} left"
        width = shutil.get_terminal_size((80, 24)).columns - 1
        # the bar keeps its width when the estimate of the time left comes and goes
        n = max(10, min(30, width - len(text) - (2 if "left" in text else 14)))
        # half volumes finished, half clicks answered: it moves during a volume of many clicks
        frac = (self.done / max(self.volumes, 1) + self.clicks_done / max(self.clicks, 1)) / 2
        fill = min(n, int(frac * n))
        return (f"[{'#' * fill}{'.' * (n - fill)}]{text}")[:width]

    def _draw(self, above: str = ""):
        line = self._line()
        # pad over what the last draw left on the line (no terminal control codes)
        pad = " " * max(0, self._shown - len(line))
        if above:
            self.stream.write("\r" + above.ljust(self._shown) + "\n")
            pad = ""
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._shown = len(line)

    def show(self, event, rec):
        if event == "queued":
            return
        self._draw(f"{rec.volume}: {_status_text(rec)}" if event == "done" and not rec.ok else "")

    def close(self):
        with self.lock:
            self._closed.set()
            if self.volumes:
                self._draw()
                self.stream.write("\n")
                self.stream.flush()


def summary(records: Sequence[VolumeResult], wall: float) -> str:
    """The table of the volumes and a totals line."""
    head = ("volume", "objects", "clicks", "voxels", "seconds", "status")
    rows = []
    for r in records:
        clicks = str(r.clicks) if r.clicks_sent == r.clicks else f"{r.clicks_sent}/{r.clicks}"
        voxels = "/".join(str(v) for v in r.voxels) if r.ok else "-"
        rows.append((r.volume, str(r.objects), clicks, voxels, f"{r.seconds:.1f}", _status_text(r)))
    widths = [max(len(row[c]) for row in [head, *rows]) for c in range(len(head))]
    right = (False, True, True, True, True, False)

    def fmt(row):
        cells = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)]
        return "  ".join(cells).rstrip()

    skipped = sum(r.status == NOT_STARTED for r in records)
    failed = sum(not r.ok for r in records) - skipped
    sent = sum(r.clicks_sent for r in records)
    rate = (len(records) - skipped) / wall * 60 if wall > 0 else 0.0
    totals = (f"{len(records)} volume{'s' * (len(records) != 1)}, {sent} click{'s' * (sent != 1)}, "
              f"{failed} failure{'s' * (failed != 1)}, "
              + (f"{skipped} not started, " if skipped else "")
              + f"wall {wall:.1f} s, {rate:.1f} volumes/min")
    return "\n".join([fmt(head), *(fmt(row) for row in rows), totals])


# -- the command -------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: at least 1")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not x > 0 or not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text}: a positive number of seconds")
    return x


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sam3d.batch",
        description="Segment a folder of NIfTI volumes on a Triton server running libsam3d, from a clicks "
                    "file; each object's mask is written beside its volume.",
        epilog="Exit codes: 0 all volumes segmented, 1 some failed (see the summary), 2 a bad clicks file "
               "or command line (nothing sent), 130 interrupted.")
    p.add_argument("folder", metavar="FOLDER",
                   help="the folder holding the volumes; the clicks file's names are relative to it")
    p.add_argument("--server", required=True, metavar="URL",
                   help="the Triton server: http://host:port, grpc://host:port, or host:port (HTTP)")
    p.add_argument("--model", default="sam3d",
                   help="the model's name in the server's model repository (default: %(default)s)")
    p.add_argument("--clicks", required=True, metavar="JSON",
                   help="the clicks file: volume file name -> [[x, y, z], ...] (voxel indices, one object) or "
                        "{\"coord\": \"ijk\"|\"lps\"|\"ras\", \"objects\": [[click, ...], ...]}, a click being "
                        "[x, y, z] or {\"point\": [x, y, z], \"positive\": false}")
    p.add_argument("--parallel", type=_positive_int, default=2, metavar="N",
                   help="volumes in flight at once, one session each; about the server's model instances "
                        "keeps them all busy (default: %(default)s)")
    p.add_argument("--suffix", default="_mask",
                   help="added to a volume's name for its masks: <stem><suffix>.nii.gz for the first object, "
                        "<stem><suffix>-<k>.nii.gz for object k > 0 (default: %(default)s)")
    p.add_argument("--timeout", type=_positive_float, default=600.0, metavar="SECONDS",
                   help="how long to wait for the server's answer to one request, the volume's upload "
                        "included (default: %(default)g)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress on stderr (the summary still goes to stdout); without it, a bar when "
                        "stderr is a terminal, else one line per finished volume")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.quiet:
        progress = None
    elif sys.stderr.isatty():
        progress = _Bar(sys.stderr)
    else:
        progress = _Lines(sys.stderr)
    # an empty mask shows as 0 voxels in the summary; the warning would only break the progress bar
    warnings.simplefilter("ignore", EmptyMaskWarning)
    t0 = time.monotonic()
    code = 0
    try:
        records = run(args.server, args.folder, args.clicks, parallel=args.parallel, model=args.model,
                      suffix=args.suffix, progress=progress, timeout=args.timeout)
    except ClicksError as e:
        n = len(e.problems)
        print(f"{p.prog}: {args.clicks}: {n} problem{'s' * (n != 1)}, nothing sent:", file=sys.stderr)
        for line in e.problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    except Interrupted as e:
        records, code = e.records, 130
    finally:
        if progress:
            progress.close()
    print(summary(records, time.monotonic() - t0))
    sys.stdout.flush()
    if code:
        return code
    return 0 if all(r.ok for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
