"""Training, evaluating and predicting at 100,000 images (issue 8): the CLI as a user runs it, with its peak memory
and the time of every stage it reports.

A folder of 32×32 PNGs in 10 overlapping classes is generated once (two worker processes) and cached; then
``python -m embedder train``, ``evaluate``, ``add`` (1,000 more images) and ``predict`` run on it as child
processes. Peak RSS comes from the kernel (/proc's VmHWM, reset at each stage, for each stage; a command's is the
largest of those and ``wait4``'s ru_maxrss), and a stage's time runs from its first progress line to the next
stage's.

    python -m bench.bench_scale [--images 100000] [--epochs 1] [--cache DIR] [--kill-above GB]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

SIDE = 32
GOAL_BYTES = 4 * 1024**3  # issue 8: train on 100k images within 4 GB
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# --- the data ----------------------------------------------------------------------------------------------


def _prototypes(n_classes: int, seed: int) -> np.ndarray:
    """(C, 48, 48, 3) smooth random colour fields, one per class: low-frequency cosines of random direction."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    out = np.zeros((n_classes, 48, 48, 3), dtype=np.float32)
    for c in range(n_classes):
        for ch in range(3):
            f = rng.uniform(0.5, 2.5, size=(3, 2))
            phase = rng.uniform(0, 2 * np.pi, size=3)
            field = sum(np.cos(2 * np.pi * (f[j, 0] * xx + f[j, 1] * yy) + phase[j]) for j in range(3))
            out[c, :, :, ch] = field / 3
    return out


def _write_chunk(args: tuple[Path, int, int, int, int]) -> int:
    """Images ``start..stop`` of the set: class ``i % C``; its prototype, shifted, mixed with up to 70% of another
    class's and noised, so that nearest neighbours are often of the wrong class (overlapping classes)."""
    from PIL import Image

    root, start, stop, n_classes, seed = args
    protos = _prototypes(n_classes, seed)
    for i in range(start, stop):
        rng = np.random.default_rng((seed, i))
        c, other = i % n_classes, int(rng.integers(n_classes))
        (dx, dy), (ox, oy) = rng.integers(0, 48 - SIDE, 2), rng.integers(0, 48 - SIDE, 2)
        mix = rng.uniform(0.0, 0.7)
        x = (1 - mix) * protos[c, dy : dy + SIDE, dx : dx + SIDE] + mix * protos[other, oy : oy + SIDE, ox : ox + SIDE]
        x = x * rng.uniform(0.6, 1.4) + rng.normal(0, 0.5, x.shape)
        pixels = np.clip(127.5 + 100 * x, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(root / f"class_{c:02d}" / f"{i:06d}.png", compress_level=1)
    return stop - start


def generate(target: Path, n_images: int, n_classes: int = 10, seed: int = 0, workers: int = 2, first: int = 0) -> Path:
    """Images ``first..first + n_images`` of the set, written once into ``target`` (atomically: a killed run leaves
    nothing half-written)."""
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    for c in range(n_classes):
        (tmp / f"class_{c:02d}").mkdir()
    step = 2_000
    end = first + n_images
    chunks = [(tmp, s, min(s + step, end), n_classes, seed) for s in range(first, end, step)]
    t0, done = time.perf_counter(), 0
    with Pool(workers) as pool:
        for n in pool.imap_unordered(_write_chunk, chunks):
            done += n
            print(f"\rgenerating {done:,}/{n_images:,} images", end="", file=sys.stderr, flush=True)
    print(f"\rgenerated {n_images:,} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    (tmp / ".complete").write_text(f"{n_images}\n")
    if target.exists():
        shutil.rmtree(target)  # an incomplete folder of our own name, without the marker
    os.replace(tmp, target)
    return target


# --- measuring a command -----------------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (on a shared machine, wall time says more about the neighbours)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _reset_peak(pid: int) -> bool:
    """Start a new VmHWM window (Linux ≥ 4.0: writing 5 to clear_refs resets the peak RSS)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _stage_of(fragment: str) -> str | None:
    """The stage a progress fragment belongs to: its first word ("epoch 2: ..." -> "epoch 2")."""
    text = _ANSI.sub("", fragment).strip()
    if re.match(r"epoch \d+: loss", text):  # an epoch's summary line closes its validation, it is no new stage
        return None
    m = re.match(r"(epoch \d+|[a-z]+)\b:?", text)
    return m.group(1) if m and (":" in text[: m.end() + 1] or text.startswith("epoch")) else None


class Measured:
    """A child process's stages: first-seen time and peak RSS of each, the whole command's peak and wall time."""

    def __init__(self, argv: list[str], kill_above_kb: int | None = None) -> None:
        self.argv, self.stages, self.lines, self.kill_above_kb, self.killed = argv, {}, [], kill_above_kb, False
        self.peak_kb, self.wall, self.returncode = 0, 0.0, None
        self._current, self._raw, self._exact = None, None, False

    def _enter(self, pid: int, stage: str) -> None:
        now = time.perf_counter()
        if stage == self._raw or stage in ("note", "done"):  # a note is a line within a stage
            return
        self._raw = stage
        seen = sum(1 for name in self.stages if name.split(" (")[0] == stage)
        stage = f"{stage} ({seen + 1})" if seen else stage  # validation comes back after each epoch
        self._close(pid)
        self._exact = _reset_peak(pid)
        self.stages[stage] = {"start": now, "peak_kb": _status_kb(pid, "VmRSS") or 0, "cpu0": _cpu_seconds(pid)}
        self._current = stage

    def _close(self, pid: int) -> None:
        if self._current is None:
            return
        current = self.stages[self._current]
        current["cpu"] = _cpu_seconds(pid) - current["cpu0"]
        hwm = _status_kb(pid, "VmHWM") if self._exact else None
        if hwm:
            current["peak_kb"] = max(current["peak_kb"], hwm)

    def _sample(self, pid: int, stop: threading.Event) -> None:
        while not stop.wait(0.1):
            rss = _status_kb(pid, "VmHWM" if self._exact else "VmRSS")
            if rss and self.kill_above_kb and rss > self.kill_above_kb:  # the machine is shared: stop, say so
                self.killed = True
                os.kill(pid, 9)
            if rss and self._current is not None:
                s = self.stages[self._current]
                s["peak_kb"] = max(s["peak_kb"], rss)

    def run(self) -> Measured:
        t0 = time.perf_counter()
        proc = subprocess.Popen(self.argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
        stop = threading.Event()
        sampler = threading.Thread(target=self._sample, args=(proc.pid, stop), daemon=True)
        sampler.start()
        out = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        reader.start()
        buf = b""
        while chunk := proc.stderr.read1(4096):
            buf += chunk
            *parts, buf = re.split(rb"[\r\n]", buf)
            for part in parts:
                text = part.decode(errors="replace")
                stage = _stage_of(text)
                if stage:
                    self._enter(proc.pid, stage)
                if text.strip() and "|" not in text:
                    self.lines.append(_ANSI.sub("", text).strip())
        self._close(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        reader.join()
        self.wall, self.returncode = time.perf_counter() - t0, proc.returncode
        # ru_maxrss is the high-water mark since the last VmHWM reset, not since the start: take the stages' too.
        stage_peaks = [s["peak_kb"] for s in self.stages.values()]
        self.peak_kb, self.cpu = max([usage.ru_maxrss, *stage_peaks]), usage.ru_utime + usage.ru_stime
        self.stdout = (out[0] if out else b"").decode(errors="replace")
        ends = [s["start"] for s in self.stages.values()][1:] + [t0 + self.wall]
        for s, end in zip(self.stages.values(), ends):
            s["seconds"] = end - s["start"]
        return self

    def report(self, title: str) -> None:
        goal = f"  ({self.peak_kb * 1024 / GOAL_BYTES:.0%} of the 4 GB goal)"
        if self.killed:
            goal += f", KILLED when its RSS passed {self.kill_above_kb / 1024**2:.1f} GB"
        print(
            f"\n{title}: exit {self.returncode}, {self.wall:.0f} s wall, {self.cpu:.0f} s CPU, "
            f"peak RSS {self.peak_kb / 1024**2:.2f} GB{goal}"
        )
        for name, s in self.stages.items():
            cpu = s.get("cpu", float("nan"))
            print(
                f"  {name:<12} {s['seconds']:7.1f} s wall {cpu:7.1f} s CPU   peak RSS {s['peak_kb'] / 1024**2:5.2f} GB"
            )


# --- the benchmark ------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=100_000, help="images to generate (10 classes)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs (each is ~400 CPU s at 100k images)")
    ap.add_argument("--cache", default=None, help="where the generated folder is kept (default: the embedder cache)")
    ap.add_argument("--out", default=None, help="run folder to write (default: a temporary one, removed after)")
    ap.add_argument("--kill-above", type=float, default=8.0, help="stop a command whose RSS passes this many GB")
    args = ap.parse_args(argv)
    from embedder.images.data import default_cache_dir

    cache = Path(args.cache) if args.cache else default_cache_dir()
    data = generate(cache / f"bench-scale-{args.images}", args.images)
    tmp = None if args.out else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    out = Path(args.out) if args.out else tmp / "run"
    py = [sys.executable, "-m", "embedder"]
    train = [*py, "train", "--data", str(data), "--out", str(out), "--epochs", str(args.epochs)]
    train += ["--backbone", "convnet", "--classes-per-batch", "10", "--per-class", "16", "--batch-size-embed", "256"]
    try:
        print(f"{args.images:,} images of {SIDE}x{SIDE} px, 10 overlapping classes, in {data}")
        print("$ " + " ".join(train[1:]))
        limit = int(args.kill_above * 1024**2)
        t = Measured(train, limit).run()
        t.report("train")
        print(t.stdout)
        if t.returncode:
            print("\n".join(t.lines[-20:]))
            return
        e = Measured([*py, "evaluate", str(out)], limit).run()
        e.report("evaluate")
        print(e.stdout)
        extra = generate(cache / f"bench-scale-extra-{args.images}", 1_000, first=args.images)  # new, same classes
        a = Measured([*py, "add", str(out), str(extra)], limit).run()
        a.report("add 1,000 images")
        print(a.stdout)
        fresh = generate(cache / f"bench-scale-queries-{args.images}", 3, first=args.images + 1_000)
        queries = sorted(fresh.glob("*/*.png"))  # neither trained on nor in the gallery
        p = Measured([*py, "predict", str(out), *map(str, queries)], limit).run()
        p.report("predict")
        print(p.stdout)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
