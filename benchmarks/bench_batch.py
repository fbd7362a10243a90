"""Speed-up, memory and resume of ``immunotrack batch`` on a simulated cohort (issue 11).

Run: ``.venv/bin/python benchmarks/bench_batch.py [--subjects 16] [--days 0 1 3] [--size tiny] [--cohort DIR]
[--repeats 2] [--skip-cohort] [--skip-large]``

Figures printed, each with its requirement:

1. The same cohort (16 simulated animals scanned at days 0, 1 and 3: 32
   tasks, one per post-injection session) run with 1 and with 2 local Dask
   workers (one core each): wall time of the whole run (cluster start, the
   workers' first imports, tasks, cohort tables and figures) and
   of the task phase, the fastest of ``--repeats`` alternated runs; speed-up
   1 -> 2 workers -- at least 1.7x. The machine's load average and the tasks'
   CPU time / wall time are printed beside them: other processes on the
   cores make the figure worse than on a quiet machine.
2. Peak resident memory of each worker process (``ru_maxrss``; it includes
   the worker's own imports), against the memory limit Dask gives a worker
   (system memory / workers): memory per worker stays bounded by one task's
   data, whatever the number of subjects.
3. Resume: the 2-worker run again, unchanged: every task skipped (content
   hashes match), time of the run.
4. A large single volume through the batch pipeline: the clusters step with
   ``chunks: [64, 64, 64]`` on OME-Zarr T2*w images (the bundled sample
   study's, tiled 2x and 8x along the body axis: 3.3 and 13 million voxels),
   read lazily and processed chunk by chunk with lazy organ masks; peak traced
   memory (tracemalloc) against the in-memory run -- the chunked peak should
   not grow with the length of the scan (what lets a whole-body scan larger
   than memory run; the clusters step holds one layer of chunks across the
   body at a time), and the labels equal the in-memory ones.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from napari_immunotrack.batch import run_batch
from napari_immunotrack.errors import ImmunotrackWarning
from napari_immunotrack.simulate.cohort import make_cohort

PIPELINE = Path(__file__).resolve().parents[1] / "examples" / "pipeline.yaml"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def cpu_share(summary) -> float:
    busy = [r for r in summary.records if r.get("cpu_s") is not None and r["status"] != "skipped"]
    return sum(r["cpu_s"] for r in busy) / max(sum(r["seconds"] for r in busy), 1e-9)


def timed_run(cohort: Path, out: Path, workers: int):
    t0 = time.perf_counter()
    summary = run_batch(PIPELINE, cohort, out, workers=workers)
    wall = time.perf_counter() - t0
    return summary, wall


def tiled_study(dst: Path, reps) -> Path:
    """The sample study's day-0/day-1 T2*w and label map tiled ``reps`` times, as OME-Zarr."""
    import numpy as np

    from napari_immunotrack.data import sample_study_root
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.io.zarr import write_ome_zarr

    src = sample_study_root() / "sub-01"
    for ses in ("ses-day0", "ses-day1"):
        for kind, suffix in (("anat", "T2starw"), ("rois", "dseg")):
            vol = load_volume(src / ses / kind / f"sub-01_{ses}_{suffix}.nii.gz")
            out = dst / "sub-01" / ses / kind
            out.mkdir(parents=True, exist_ok=True)
            write_ome_zarr(
                vol.replace(data=np.tile(vol.numpy(), reps)),
                out / f"sub-01_{ses}_{suffix}.ome.zarr",
                levels=1,
                chunks=(64, 64, 64),
            )
        tsv = src / ses / "rois" / f"sub-01_{ses}_dseg.tsv"
        shutil.copy(tsv, dst / "sub-01" / ses / "rois" / tsv.name)
    return dst


def large_volume(work: Path) -> None:
    import tracemalloc

    import numpy as np

    from napari_immunotrack.batch import find_tasks, parse_pipeline
    from napari_immunotrack.pipeline import analyse_inputs

    print("\n--- large single volume: clusters step on OME-Zarr, chunk by chunk")
    text = "inputs:\n  T2starw: anat/*_T2starw.ome.zarr\n  dseg: rois/*_dseg.ome.zarr\nsteps:\n  clusters:{}\n"
    peaks = {}
    for name, reps in (("2x", (2, 1, 1)), ("8x", (8, 1, 1))):
        root = tiled_study(work / f"large_{name}", reps)
        for chunks in (None, [64, 64, 64]):
            pipeline = parse_pipeline(text.format(" {}" if chunks is None else f"\n    chunks: {chunks}"))
            task = find_tasks(pipeline, root)[0]
            tracemalloc.start()
            t0 = time.perf_counter()
            result = analyse_inputs(task["inputs"], steps=["clusters"], parameters=pipeline.steps)
            labels = result.volumes["clusters"].numpy() if chunks is None else None
            if chunks is not None:  # the lazy labels, computed chunk by chunk (as the batch writes them)
                for block in result.volumes["clusters"].data.blocks.ravel():
                    block.compute()
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            shape = result.volumes["clusters"].spatial_shape
            image_mb = np.prod(shape) * 2 / 2**20  # int16 on disk, float32 when read: x2
            key = f"{name} {'in memory' if chunks is None else 'chunked'}"
            peaks[key] = peak
            print(
                f"{key:<16} {shape} ({np.prod(shape) / 1e6:.1f} Mvoxels, {image_mb:.0f} MB int16): "
                f"{len(result.tables['clusters'])} clusters in {time.perf_counter() - t0:.1f} s, "
                f"peak traced memory {peak:.0f} MB"
            )
            if chunks is None:
                reference = labels
            else:
                same = np.array_equal(result.volumes["clusters"].numpy(), reference)
                print(f"chunked labels equal the in-memory labels: {same}")
    print(
        f"peak memory, 8x vs 2x volume (4x the voxels): chunked {peaks['8x chunked'] / peaks['2x chunked']:.2f}x, "
        f"in memory {peaks['8x in memory'] / peaks['2x in memory']:.2f}x  (requirement: chunked bounded, not "
        "proportional to the scan's length)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=16)
    parser.add_argument("--days", type=float, nargs="+", default=[0, 1, 3])
    parser.add_argument("--size", default="tiny", choices=("tiny", "sample", "full"))
    parser.add_argument("--cohort", help="reuse (or create) the simulated cohort in this folder")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration (the fastest is kept)")
    parser.add_argument("--skip-cohort", action="store_true", help="only the large-volume figure")
    parser.add_argument("--skip-large", action="store_true", help="no large-volume figure")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ImmunotrackWarning)
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        if not args.skip_cohort:
            cohort_figures(args, work)
        if not args.skip_large:
            large_volume(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cohort_figures(args, work: Path) -> None:
    cohort = Path(args.cohort) if args.cohort else work / "cohort"
    if not cohort.exists():
        t0 = time.perf_counter()
        make_cohort(cohort, n_subjects=args.subjects, seed=11, timepoints_days=args.days, size=args.size)
        print(
            f"simulated cohort: {args.subjects} subjects x days {args.days} ({args.size}) in "
            f"{time.perf_counter() - t0:.1f} s -> {cohort}"
        )
    import psutil

    total_mb = psutil.virtual_memory().total / 2**20
    results = {}
    # alternate 1 and 2 workers and keep each one's fastest run: other processes on a shared machine
    # only ever slow a run down
    for repeat, workers in [(r, w) for r in range(args.repeats) for w in (1, 2)]:
        print(f"\n--- {workers} worker(s), run {repeat + 1}; before: {load()}")
        shutil.rmtree(work / f"out{workers}", ignore_errors=True)
        summary, wall = timed_run(cohort, work / f"out{workers}", workers)
        per_task = [r["seconds"] for r in summary.records if r["seconds"]]
        counts = {s: summary.count(s) for s in ("ok", "partial", "skipped", "failed")}
        if workers not in results or wall < results[workers][0]:
            results[workers] = (wall, summary)
        print(
            f"{len(summary.records)} tasks {counts}: wall {wall:.1f} s (checks {summary.timings_s['checks']:.1f}, "
            f"cluster start {summary.timings_s['cluster_start']:.1f}, tasks {summary.timings_s['tasks']:.1f}, "
            f"cohort tables + figure {summary.timings_s['cohort_outputs']:.1f}); task time median "
            f"{statistics.median(per_task):.2f} s (first task of a worker, with its imports: "
            f"{max(per_task):.1f} s)"
        )
        print(
            f"CPU time / wall time of the tasks: {cpu_share(summary):.2f} (1.00 = each task had a core to itself; "
            "lower = the cores were shared with other processes)"
        )
        peaks = summary.peak_rss_mb_per_worker
        print(
            f"peak memory per worker: {', '.join(f'{v:.0f} MB' for v in sorted(peaks.values()))} "
            f"(Dask memory limit per worker {total_mb / workers:.0f} MB)"
        )
        print(f"after: {load()}")
    (w1, s1), (w2, s2) = results[1], results[2]
    print("\n=== figures ===")
    print(f"speed-up 1 -> 2 workers, whole run : {w1 / w2:.2f}x   (requirement: >= 1.7x)")
    print(
        f"speed-up 1 -> 2 workers, task phase: {s1.timings_s['tasks'] / s2.timings_s['tasks']:.2f}x   "
        f"(CPU time / wall time of the tasks in these runs: {cpu_share(s1):.2f} and {cpu_share(s2):.2f})"
    )
    peak = max(max(s.peak_rss_mb_per_worker.values()) for s in (s1, s2))
    print(
        f"peak memory of a worker: {peak:.0f} MB  (requirement: bounded; it does not grow with the number "
        f"of subjects: each worker holds one task's images at a time)"
    )
    t0 = time.perf_counter()
    again = run_batch(PIPELINE, cohort, work / "out2", workers=2)
    print(
        f"resume of the finished 2-worker run: {again.count('skipped')}/{len(again.records)} tasks skipped "
        f"in {time.perf_counter() - t0:.1f} s  (requirement: finished tasks not redone)"
    )
    print(load())


if __name__ == "__main__":  # needed: Dask starts its worker processes by spawning this script's module
    main()
