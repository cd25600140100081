"""The serving GPU's UUID in /info (run.json's ``service.gpu_uuids``), without a GPU: torch's CUDA
queries are replaced by a fake device at their boundary; the service code is the production one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from services.inference.configs import ServingConfig
from services.inference.engines import EngineSettings
from services.inference.service import InferenceService, cuda_device_uuids
from services.models.resolve import resolve


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two visible devices; the process serves on device 1 (as after torch.cuda.set_device(1))."""
    calls = []

    def props(i):
        calls.append(i)
        return SimpleNamespace(uuid=["1111aaaa-0000-0000-0000-000000000000", "2222bbbb-0000-0000-0000-000000000000"][i])

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    return calls


def service(config: str) -> InferenceService:
    svc = InferenceService(ServingConfig.parse(config), resolve("tiny", build=False), EngineSettings(threads=1))
    svc.state = "ready"  # as after load(): no model is needed to describe the device
    return svc


def test_cuda_service_reports_its_own_board_in_nvml_form(fake_cuda):
    assert cuda_device_uuids() == ["GPU-2222bbbb-0000-0000-0000-000000000000"]
    info = service("torch-cuda").info()
    assert info["gpu_uuids"] == ["GPU-2222bbbb-0000-0000-0000-000000000000"] and info["device"] == "cuda"


def test_cpu_service_never_touches_cuda(fake_cuda):
    assert service("onnx-cpu").info()["gpu_uuids"] == [] and fake_cuda == []


def test_no_usable_gpu_is_an_empty_list(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_device_uuids() == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: (_ for _ in ()).throw(RuntimeError("no driver")))
    assert cuda_device_uuids() == []
