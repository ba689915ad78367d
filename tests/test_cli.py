"""The `znnx` command: inspect, run, demo, and one-line errors without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from znnx.cli import main
from znnx.demo import model_path


def test_inspect_onnx(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(model_path())]) == 0
    out = capsys.readouterr().out
    assert " elu " in out and "conv_transpose" in out
    assert "input 32x32x32 -> output 32x32x32" in out


def test_inspect_optimized_shows_both_graphs_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(model_path()), "--optimized"]) == 0
    out = capsys.readouterr().out
    before, after = out.split("after optimization", 1)
    table, counts = after.split("rewrites per pass", 1)
    assert " elu " in before and " elu " not in table
    assert "conv+elu" in after and "conv_transpose+add" in after and "conv+sigmoid" in after
    assert "fuse_activation      7" in counts and "planned peak" in table


def test_compile_writes_a_network_file_that_run_and_inspect_read(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "net.znnx"
    assert main(["compile", str(model_path()), "--patch", "16,24,20", "-o", str(path)]) == 0
    assert "wrote" in capsys.readouterr().out
    x = np.random.default_rng(0).random((1, 16, 24, 20), dtype=np.float32)
    np.save(tmp_path / "in.npy", x)
    assert main(["run", str(path), str(tmp_path / "in.npy"), str(tmp_path / "a.npy")]) == 0
    assert main(["run", str(model_path()), str(tmp_path / "in.npy"), str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert main(["inspect", str(path)]) == 0
    assert "conv+elu" in capsys.readouterr().out
    path.write_bytes(path.read_bytes()[:100])
    assert main(["inspect", str(path)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_inspect_torch_factory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "mynet.py"
    source.write_text("import torch.nn as nn\n\ndef build():\n    return nn.Conv3d(1, 4, (1, 3, 3))\n")
    assert main(["inspect", f"{source}:build", "--input-shape", "1,5,16,16", "--patch", "7,20,20"]) == 0
    assert "input 7x20x20 -> output 7x18x18" in capsys.readouterr().out


def test_a_factory_file_may_define_dataclasses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model file run as a module of its own: a dataclass in it (which looks its module up in
    sys.modules) loads, as it does under `python mynet.py`."""
    source = tmp_path / "models.py"
    source.write_text("from dataclasses import dataclass\nimport torch.nn as nn\n\n@dataclass(frozen=True)\n"
                      "class Spec:\n    width: int = 4\n\ndef build():\n    return nn.Conv3d(1, Spec().width, 3)\n")
    assert main(["inspect", f"{source}:build", "--input-shape", "1,8,8,8"]) == 0
    assert "input 8x8x8 -> output 6x6x6" in capsys.readouterr().out


def test_inspect_plan_shows_each_convs_algorithm_and_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "wide.py"
    source.write_text("import torch.nn as nn\n\ndef build():\n"
                      "    return nn.Sequential(nn.Conv3d(1, 16, 3, padding=1), nn.ELU(),\n"
                      "        nn.Conv3d(16, 16, 3, padding=1), nn.ELU(), nn.Conv3d(16, 16, (1, 3, 3)))\n")
    model = f"{source}:build"
    assert main(["inspect", model, "--input-shape", "1,8,12,12", "--plan"]) == 0
    lines = capsys.readouterr().out.split("plan: convolution algorithms", 1)[1].splitlines()[2:]
    assert [line.split()[0] for line in lines] == ["conv3d", "conv3d_1", "conv3d_2"]
    assert lines[0].split()[-2:] == ["-", "rule"] or "direct" in lines[0]
    assert "measured" in lines[1] and "winograd4" in lines[1] and "direct" in lines[1]
    assert main(["inspect", model, "--input-shape", "1,8,12,12", "--plan", "--algorithm", "conv3d_2=fft"]) == 0
    forced = capsys.readouterr().out.split("plan:", 1)[1].splitlines()[-1].split()
    assert forced[0] == "conv3d_2" and "fft16" in forced and "forced" in forced


def test_inspect_caffe_without_weights(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.frontends.test_from_caffe import PZNET

    assert main(["inspect", str(PZNET), "--patch", "18,64,64"]) == 0
    out = capsys.readouterr().out
    assert "input 18x64x64 -> output 18x64x64" in out and "nodes 193" in out


def test_run_writes_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(0).random((1, 16, 24, 20), dtype=np.float32)
    np.save(tmp_path / "in.npy", x)
    assert main(["run", str(model_path()), str(tmp_path / "in.npy"), str(tmp_path / "out.npy")]) == 0
    assert np.load(tmp_path / "out.npy").shape == (1, 16, 24, 20)
    assert "output voxels/s" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "in.npy", np.zeros((1, 16, 16, 16), np.uint8))
    assert main(["run", str(model_path()), str(tmp_path / "in.npy"), str(tmp_path / "out.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("znnx: error: net: input 'raw' has dtype uint8")
    assert "Traceback" not in err
    assert main(["inspect", str(tmp_path / "missing.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_runs_blockwise_and_checks_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--size", "40"]) == 0
    out = capsys.readouterr().out
    # blocks and the whole volume are different patches, tuned apart: each conv within its algorithm's bound
    assert float(out.split("blockwise vs whole-volume max difference: ", 1)[1].split()[0]) < 1e-4
    assert float(out.rsplit("max error vs the NumPy reference executor: ", 1)[1].split()[0]) < 1e-4
    import zarr

    assert zarr.open_array(str(tmp_path / "output.zarr"), path="pred", mode="r").shape == (1, 40, 40, 40)
    assert (tmp_path / "preview.png").read_bytes().startswith(b"\x89PNG")


def test_infer_writes_the_volume_and_a_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    volume = np.random.default_rng(0).integers(0, 255, (30, 34, 38), dtype=np.uint8)
    np.save(tmp_path / "raw.npy", volume)
    args = ["infer", str(model_path()), str(tmp_path / "raw.npy"), str(tmp_path / "out.zarr/pred"),
            "--patch", "24,24,24", "--scale", str(1 / 255), "--output-dtype", "float16", "--quiet"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["blocks"] == summary["computed"] > 1 and summary["voxels"] == volume.size
    import zarr

    out = zarr.open_array(str(tmp_path / "out.zarr"), path="pred", mode="r")
    assert out.shape == (1, 30, 34, 38) and out.dtype == np.float16
    assert main(args) == 0  # a finished run is not recomputed
    again = json.loads(capsys.readouterr().out)
    assert again["resumed"] == summary["blocks"] and again["computed"] == 0
    assert main([*args[:-1], "--patch", "32,32,32"]) == 2
    assert "different run" in capsys.readouterr().err


def test_infer_then_segment_its_boundaries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`infer --segment` segments the predicted boundary map chunk by chunk: the labels equal the
    in-memory segmentation of the written prediction, and the summary holds both runs."""
    from znnx.demo import synthetic_volume
    from znnx.segment import SegmentOptions, segment_array
    from znnx.segment.pipeline import read_affinities
    from znnx.volume import storage

    np.save(tmp_path / "raw.npy", synthetic_volume(34)[0, :30])
    assert main(["infer", str(model_path()), str(tmp_path / "raw.npy"), str(tmp_path / "aff.zarr/pred"), "--patch",
                 "24,24,24", "--segment", str(tmp_path / "seg.zarr"), "--size", "20", "--threshold", "0.3",
                 "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["segment"]["output"] == str(tmp_path / "seg.zarr") and summary["segment"]["merges"] > 0
    prediction = storage.open_volume(str(tmp_path / "aff.zarr/pred"))
    aff = read_affinities(prediction, tuple(slice(0, n) for n in prediction.shape[1:]))
    expected, _, _ = segment_array(aff, SegmentOptions(size=20, threshold=0.3))
    assert np.array_equal(storage.open_volume(str(tmp_path / "seg.zarr")).read((slice(None),) * 3), expected)


def test_infer_on_two_devices_and_run_in_bf16(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from znnx.backends import cpu

    volume = np.random.default_rng(1).random((30, 34, 38), dtype=np.float32)
    np.save(tmp_path / "raw.npy", volume)
    assert main(["infer", str(model_path()), str(tmp_path / "raw.npy"), str(tmp_path / "a.npy"), "--patch", "24,24,24",
                 "--device", "cpu,cpu", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["workers"] == 2 and summary["computed"] == summary["blocks"]
    assert main(["infer", str(model_path()), str(tmp_path / "raw.npy"), str(tmp_path / "b.npy"), "--patch", "24,24,24",
                 "--quiet"]) == 0
    capsys.readouterr()
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), atol=1e-5)
    np.save(tmp_path / "in.npy", volume[None, :16, :24, :20])
    assert main(["run", str(model_path()), str(tmp_path / "in.npy"), str(tmp_path / "o.npy"), "--precision",
                 "fp16"]) == 2
    assert "precision: fp16 does not run on cpu; on cpu use one of" in capsys.readouterr().err
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    assert main(["run", str(model_path()), str(tmp_path / "in.npy"), str(tmp_path / "o.npy"), "--precision",
                 "bf16"]) == 2
    assert "bf16 on this CPU would be emulated" in capsys.readouterr().err
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    assert main(["run", str(model_path()), str(tmp_path / "in.npy"), str(tmp_path / "o.npy"), "--precision",
                 "bf16"]) == 0
    assert np.load(tmp_path / "o.npy").dtype == np.float32


def test_help_everywhere() -> None:
    for args in ([], ["inspect"], ["compile"], ["run"], ["demo"], ["infer"], ["segment"]):
        result = subprocess.run([sys.executable, "-m", "znnx.cli", *args, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: znnx" in result.stdout


def test_a_patch_too_large_for_the_memory_fails_fast_naming_one_that_fits(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import time

    import zarr

    zarr.create_array(store=str(tmp_path / "big.zarr"), name="raw", shape=(512, 512, 512), dtype="uint8",
                      chunks=(128, 128, 128))
    began = time.perf_counter()
    code = main(["infer", str(model_path()), str(tmp_path / "big.zarr/raw"), str(tmp_path / "out.zarr/p"),
                 "--patch", "384,384,384", "--memory", "2GiB", "--scale", "0.00392157"])
    assert code == 2 and time.perf_counter() - began < 10
    err = capsys.readouterr().err
    assert "a patch of 384x384x384 needs" in err and "more than the memory budget, 2.00 GiB" in err
    assert "use a patch of at most" in err and not (tmp_path / "out.zarr").exists()


def test_threads_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["infer", "m.onnx", "in.zarr", "out.zarr", "--threads", "0"])
    assert "expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def test_run_takes_a_single_channel_patch_without_its_channel_axis(tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.random.default_rng(0).random((16, 24, 20), dtype=np.float32))
    np.save(tmp_path / "in4.npy", np.load(tmp_path / "in.npy")[None])
    net = tmp_path / "demo.znnx"
    assert main(["compile", str(model_path()), "--patch", "16,24,20", "-o", str(net)]) == 0
    assert main(["run", str(net), str(tmp_path / "in.npy"), str(tmp_path / "a.npy")]) == 0
    assert main(["run", str(net), str(tmp_path / "in4.npy"), str(tmp_path / "b.npy")]) == 0
    assert main(["run", str(model_path()), str(tmp_path / "in.npy"), str(tmp_path / "c.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), np.load(tmp_path / "a.npy"), atol=1e-6)
