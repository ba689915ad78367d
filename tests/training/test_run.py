"""`znnx.train` end to end on a small net and synthetic data: the files it writes, learning, an
exported net that equals the training graph, resume (also after SIGKILL) that reproduces an
uninterrupted run, the CLI, and `znnx infer` applying the recorded normalization."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import znnx
from tests.training.factory import build
from znnx.backends import cpu
from znnx.cli import main
from znnx.errors import InputError, ModelError
from znnx.training.data import Augment
from znnx.training.module import TrainableNet, training_graph
from znnx.training.run import TrainOptions, fitted, train
from znnx.training.synthetic import em_volume

FACTORY = str(Path(__file__).with_name("factory.py")) + ":build"
OPTIONS = TrainOptions(patch=(8, 8, 8), steps=6, validate_every=3, checkpoint_every=3, validation=0.3,
                       algorithm="direct", threads=2, augment=Augment(jitter=0.05, missing=0.5, misalign=1))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("data")
    image, labels = em_volume((40, 32, 32), 8, seed=0)
    np.save(folder / "raw.npy", image)
    np.save(folder / "labels.npy", labels.astype(np.int64))
    return str(folder / "raw.npy"), str(folder / "labels.npy")


def _weights(folder: Path) -> dict[str, np.ndarray]:
    newest = sorted((folder / "checkpoints").glob("step-*.safetensors"))[-1]
    return {k: v for k, v in load_file(str(newest)).items() if k.startswith("net/")}


def test_train_writes_a_run_that_infer_can_use(tmp_path: Path, data: tuple[str, str]) -> None:
    summary = train(build(), *data, tmp_path, OPTIONS, input_shape=(1, 16, 16, 16), stream=None)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 7))
    assert {"boundary_f1", "pixel_error"} <= set(history[2]) and summary.scores is not None
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    net = znnx.load_net(tmp_path / "net.znnx")
    assert net.plan.normalize == pytest.approx((1 / 255, 0.0, 1.0))
    assert not any(n.op == "batchnorm" for n in net.graph.nodes)
    graph, window = fitted(training_graph(znnx.load(build(), input_shape=(1, 16, 16, 16))), (8, 8, 8))
    trained = TrainableNet(graph)
    with torch.no_grad():
        for name, tensor in trained.named_tensors().items():
            tensor.copy_(torch.from_numpy(_weights(tmp_path)[f"net/{name}"]))
    x = np.random.default_rng(0).random((1, *window.input), dtype=np.float32)
    expected = trained.eval()(torch.from_numpy(x)[None])[0].detach().numpy()
    assert np.abs(net(x) - expected).max() < 1e-5
    onnx_net = znnx.compile(znnx.load(tmp_path / "net.onnx"), patch=window.input)
    assert np.abs(onnx_net(x) - expected).max() < 1e-5


def test_learning_lowers_the_loss(tmp_path: Path, data: tuple[str, str]) -> None:
    options = TrainOptions(patch=(8, 8, 8), steps=60, validation=0, checkpoint_every=60, lr=5e-3, threads=2,
                           algorithm="direct")
    train(build(), *data, tmp_path, options, input_shape=(1, 16, 16, 16), stream=None)
    losses = [h["loss"] for h in json.loads((tmp_path / "history.json").read_text())]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, data: tuple[str, str]) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(build(), *data, whole, OPTIONS, input_shape=(1, 16, 16, 16), stream=None)
    train(build(), *data, split, TrainOptions(**{**OPTIONS.__dict__, "steps": 3}), input_shape=(1, 16, 16, 16),
          stream=None)
    train(build(), *data, split, TrainOptions(**{**OPTIONS.__dict__, "resume": True}),
          input_shape=(1, 16, 16, 16), stream=None)
    a, b = _weights(whole), _weights(split)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    history = json.loads((split / "history.json").read_text())
    assert history == json.loads((whole / "history.json").read_text()) or \
        [h["loss"] for h in history] == [h["loss"] for h in json.loads((whole / "history.json").read_text())]


def test_sigkill_then_resume_ends_with_the_same_weights(tmp_path: Path, data: tuple[str, str]) -> None:
    args = [sys.executable, "-m", "znnx", "train", FACTORY, "--image", data[0], "--labels", data[1],
            "--input-shape", "1,16,16,16", "--patch", "8,8,8", "--steps", "80", "--checkpoint-every", "5",
            "--validation", "0", "--algorithm", "direct", "--threads", "1", "--quiet"]
    subprocess.run([*args, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    killed = subprocess.Popen([*args, "--out", str(tmp_path / "killed")])
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("step-*.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    done = sorted(checkpoints.glob("step-*.json"))
    assert done and done[-1].name != "step-00000080.json"
    subprocess.run([*args, "--out", str(tmp_path / "killed"), "--resume"], check=True, capture_output=True)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_cli_train_then_infer_with_the_recorded_scale(tmp_path: Path, data: tuple[str, str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", FACTORY, "--image", data[0], "--labels", data[1], "--input-shape", "1,16,16,16",
                 "--patch", "8,8,8", "--steps", "4", "--validate-every", "2", "--validation", "0.3", "--out",
                 str(out), "--algorithm", "direct", "--quiet"]) == 0
    assert "trained 4 steps" in capsys.readouterr().out
    assert main(["infer", str(out / "net.znnx"), data[0], str(tmp_path / "pred.npy"), "--quiet"]) == 0
    recorded = np.load(tmp_path / "pred.npy")
    assert main(["infer", str(out / "net.znnx"), data[0], str(tmp_path / "raw.npy"), "--scale", "1", "--quiet"]) == 0
    assert not np.allclose(recorded, np.load(tmp_path / "raw.npy"))


def test_bad_options_are_named(tmp_path: Path, data: tuple[str, str]) -> None:
    with pytest.raises(InputError, match="optimizer 'adagrad'"):
        train(build(), *data, tmp_path, TrainOptions(optimizer="adagrad"), input_shape=(1, 16, 16, 16))
    with pytest.raises(ModelError, match="affinity net 3"):
        train(build(), *data, tmp_path, TrainOptions(target="affinity", patch=(8, 8, 8)), input_shape=(1, 16, 16, 16),
              stream=None)
    with pytest.raises(InputError, match="validation=0"):
        train(build(), *data, tmp_path, TrainOptions(patch=(30, 8, 8), validation=0.2),
              input_shape=(1, 16, 16, 16), stream=None)


def test_bf16_mixed_precision_on_the_cpu(tmp_path: Path, data: tuple[str, str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    with pytest.raises(InputError, match="train: precision: bf16 on this CPU would be emulated"):
        train(build(), *data, tmp_path, TrainOptions(precision="bf16"), input_shape=(1, 16, 16, 16))
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    options = TrainOptions(patch=(8, 8, 8), steps=8, validate_every=4, checkpoint_every=4, validation=0.3,
                           precision="bf16", threads=2)
    summary = train(build(), *data, tmp_path, options, input_shape=(1, 16, 16, 16), stream=None)
    assert np.isfinite(summary.loss) and summary.scores is not None and "PyTorch's own" in summary.choices
    assert znnx.load_net(tmp_path / "net.znnx").precision.name == "fp32"
    with pytest.raises(InputError, match="fp16 does not run on cpu"):
        train(build(), *data, tmp_path, TrainOptions(precision="fp16"), input_shape=(1, 16, 16, 16))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_with_a_gradient_scaler(tmp_path: Path, data: tuple[str, str]) -> None:
    options = TrainOptions(patch=(8, 8, 8), steps=6, validate_every=3, checkpoint_every=3, validation=0.3,
                           device="cuda", precision="fp16")
    summary = train(build(), *data, tmp_path, options, input_shape=(1, 16, 16, 16), stream=None)
    assert np.isfinite(summary.loss)
    state = json.loads(sorted((tmp_path / "checkpoints").glob("step-*.json"))[-1].read_text())
    assert state["scaler"] is not None


def test_train_restores_pytorchs_global_settings(tmp_path: Path, data: tuple[str, str]) -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    options = TrainOptions(patch=(8, 8, 8), steps=2, validation=0, checkpoint_every=2, threads=1, algorithm="direct")
    train(build(), *data, tmp_path, options, input_shape=(1, 16, 16, 16), stream=None)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)
