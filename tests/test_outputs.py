"""Atomic outputs, overwrite protection, tables with provenance sidecars."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from napari_immunotrack import provenance
from napari_immunotrack.errors import InputError, OutputExistsError
from napari_immunotrack.outputs import (
    atomic_output,
    atomic_output_dir,
    check_output,
    sidecar_path,
    write_json,
    write_table,
    write_text,
)
from napari_immunotrack.volume import Volume


def test_old_file_intact_when_writer_raises(tmp_path):
    out = tmp_path / "result.csv"
    out.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(out, overwrite=True) as tmp:
            tmp.write_text("half of the new content")
            raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]  # the temporary file is gone


def test_new_file_absent_when_writer_raises(tmp_path):
    with pytest.raises(ValueError):
        with atomic_output(tmp_path / "new.nii.gz") as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path  # double extension kept, same folder
            tmp.write_bytes(b"x")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_refuses_overwrite(tmp_path):
    out = tmp_path / "a.txt"
    write_text(out, "first")
    with pytest.raises(OutputExistsError, match="--overwrite") as excinfo:
        write_text(out, "second")
    assert "\n" not in str(excinfo.value)
    assert out.read_text() == "first"
    write_text(out, "second", overwrite=True)
    assert out.read_text() == "second"


def test_check_output_bad_paths(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        check_output(tmp_path / "missing" / "a.csv")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="folder"):
        check_output(tmp_path / "d", overwrite=True)
    assert check_output(tmp_path / "fine.csv") == tmp_path / "fine.csv"


_KILL_CHILD = r"""
import sys
from napari_immunotrack.outputs import atomic_output
path, megabytes = sys.argv[1], int(sys.argv[2])
block = bytes(range(256)) * 4096  # 1 MiB
print("ready", flush=True)
with atomic_output(path, overwrite=True) as tmp:
    with open(tmp, "wb") as fh:
        for _ in range(megabytes):
            fh.write(block)
        fh.write(b"END")
"""


def _is_old_or_complete(path, megabytes):
    if not path.exists():
        return "absent"
    data = path.read_bytes()
    if data == b"OLD CONTENT":
        return "old"
    assert len(data) == megabytes * (1 << 20) + 3 and data.endswith(b"END"), "partial file left in place"
    return "new"


def test_sigkill_during_write_never_leaves_a_partial_file(tmp_path):
    megabytes = 16
    target = tmp_path / "big.bin"

    def run(kill_after=None):
        target.write_bytes(b"OLD CONTENT")
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_CHILD, str(target), str(megabytes)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        if kill_after is not None:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        return time.perf_counter() - start, proc.returncode

    duration, rc = run()  # one uninterrupted write: how long the writing takes here
    assert rc == 0 and _is_old_or_complete(target, megabytes) == "new"
    rng = random.Random(1234)
    seen = set()
    for _ in range(6):
        _, rc = run(kill_after=rng.uniform(0.0, 1.2 * duration))
        seen.add(_is_old_or_complete(target, megabytes))
        # whatever was left behind is a hidden temporary file, never the target itself
        for leftover in tmp_path.iterdir():
            assert leftover == target or (leftover.name.startswith(".big.bin.") and ".part" in leftover.name)
        for leftover in tmp_path.glob(".big.bin.*"):
            leftover.unlink()
    assert seen <= {"old", "new"}
    assert "old" in seen  # at least one kill landed before the rename (the test really interrupts writes)


def test_atomic_output_dir(tmp_path):
    out = tmp_path / "image.ome.zarr"
    with atomic_output_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(OutputExistsError):
        with atomic_output_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError
    assert (out / "a").read_text() == "1"  # the old folder survives a failed rewrite
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["image.ome.zarr"]  # no temporary folders left


def test_write_table_with_provenance_sidecar(tmp_path):
    image = tmp_path / "mri.nii.gz"
    image.write_bytes(b"pretend image bytes")
    df = pd.DataFrame({"label": [1, 2], "volume_mm3": [12.5, 3.25], "mean_bq_ml": [1000.0, np.nan]})
    rec = provenance.record(
        "roi_stats",
        inputs={"image": image, "missing": None},
        parameters={"threshold": 0.5},
        warnings=["a doubtful value"],
    )
    out = write_table(df, tmp_path / "stats.csv", provenance=rec)
    back = pd.read_csv(out)
    pd.testing.assert_frame_equal(back, df)
    side = json.loads(sidecar_path(out).read_text())
    assert sidecar_path(out).name == "stats.csv.provenance.json"
    assert side["inputs"]["image"]["sha256"] == hashlib.sha256(b"pretend image bytes").hexdigest()
    assert side["inputs"]["image"]["path"] == str(image.resolve())
    assert "missing" not in side["inputs"]
    assert side["parameters"] == {"threshold": 0.5} and side["warnings"] == ["a doubtful value"]
    assert side["step"] == "roi_stats" and side["software"]["numpy"] == np.__version__
    # the table is refused as a whole when it exists: neither the table nor its sidecar changes
    before = (out.read_bytes(), sidecar_path(out).read_bytes())
    with pytest.raises(OutputExistsError):
        write_table(df.head(1), out, provenance=provenance.record("other"))
    assert (out.read_bytes(), sidecar_path(out).read_bytes()) == before


def test_provenance_of_volumes_and_folders(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mem = provenance.describe_input(Volume(data, np.eye(4), name="v"))
    assert mem["sha256_data"] == provenance.sha256_array(data) and mem["shape"] == [2, 3, 4]
    assert provenance.sha256_array(data) != provenance.sha256_array(data.astype(np.float64))
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    on_disk = provenance.describe_input(Volume(data, np.eye(4), metadata={"source_path": str(src)}))
    assert on_disk["sha256"] == hashlib.sha256(b"abc").hexdigest()
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"one")
    (folder / "2.dcm").write_bytes(b"two")
    h1 = provenance.sha256_path(folder)
    assert h1 == provenance.sha256_path(folder)
    (folder / "2.dcm").write_bytes(b"TWO")
    assert provenance.sha256_path(folder) != h1
    assert provenance.describe_input(3.5) == {"value": "3.5"}


def test_write_json_converts_numpy(tmp_path):
    out = write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": np.arange(3), "p": tmp_path})
    assert json.loads(out.read_text()) == {"a": 1.5, "b": [0, 1, 2], "p": str(tmp_path)}
    assert os.path.getsize(out) > 0


def test_a_record_left_beside_an_older_table_is_detected(tmp_path, monkeypatch):
    """A crash between the sidecar's rename and the table's leaves the old table with the new record:
    the record's output hash tells them apart (``immunotrack info`` warns)."""
    import napari_immunotrack.outputs as outputs

    out = write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv", provenance=provenance.record("first"))
    assert outputs.sidecar_matches(out) is True
    real_replace = os.replace

    def crash_on_the_table(src, dst):
        if str(dst).endswith("t.csv"):
            raise KeyboardInterrupt  # the process dies here
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", crash_on_the_table)
    with pytest.raises(KeyboardInterrupt):
        write_table(pd.DataFrame({"a": [2]}), out, provenance=provenance.record("second"), overwrite=True)
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    assert pd.read_csv(out)["a"].tolist() == [1]  # the old table, whole
    assert json.loads(sidecar_path(out).read_text())["step"] == "second"
    assert outputs.sidecar_matches(out) is False
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]  # no temporary file left


def test_a_lazy_array_is_hashed_in_slabs_with_the_same_hash(monkeypatch):
    import dask.array as da

    data = np.random.default_rng(5).normal(size=(37, 11, 13)).astype(np.float32)
    lazy = da.from_array(data, chunks=(5, 4, 13))
    computed = []
    real_compute = da.Array.compute

    def counting_compute(self, *args, **kwargs):
        out = real_compute(self, *args, **kwargs)
        computed.append(out.nbytes)
        return out

    monkeypatch.setattr(da.Array, "compute", counting_compute)
    slab = 3 * 11 * 13 * 4  # three planes at a time
    assert provenance.sha256_array(lazy, slab_bytes=slab) == provenance.sha256_array(data)
    assert max(computed) <= slab and len(computed) == 13  # never more than a slab in memory
    entry = provenance.describe_input(Volume(lazy, np.eye(4), name="lazy"))
    assert entry["sha256_data"] == provenance.sha256_array(data)
