"""CUDA checks of the export and the sampler: skipped unless onnxruntime-gpu sees a CUDA device."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from settle.streams.runtime.sampler import Sampler  # noqa: E402
from settle.trainer.student.build import build_student, load_student  # noqa: E402
from settle.trainer.student.export import export_onnx, verify_export  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available(),
        reason="needs onnxruntime-gpu and a CUDA device",
    ),
]
NEW = 24


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    return build_student(tmp_path_factory.mktemp("student"), shape="tiny", seed=0, max_files=30)


@pytest.fixture(scope="module")
def onnx_dir(student_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(student_dir, out)
    return out


@pytest.fixture(scope="module")
def prompts(student_dir):
    _, tok = load_student(student_dir)
    texts = ["def add(x, y):\n    return x + y\n", "import os\n"]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def test_cuda_sampler_with_io_binding_matches_cpu(onnx_dir, prompts):
    want = Sampler(onnx_dir, providers=["CPUExecutionProvider"]).sample(prompts, 2, NEW, 0.0, stop_token_ids=[])
    gpu = Sampler(onnx_dir)
    assert gpu.device == "cuda" and gpu.io_binding
    assert gpu.sample(prompts, 2, NEW, 0.0, stop_token_ids=[]) == want


def test_fp16_export_matches_transformers_on_cuda(student_dir, tmp_path):
    export_onnx(student_dir, tmp_path, dtype="fp16", device="cuda")
    assert verify_export(student_dir, tmp_path, device="cuda") < 5e-2
