"""Device choice (``--device``): resolution from what torch reports (injected), its errors, and that
the quantisers and runners are handed the chosen device and honour it. CPU only: CUDA itself is
exercised by tests/test_gpu.py (marker ``gpu``)."""

from __future__ import annotations

import json
import types

import pytest

from qwen3_quant.device import (
    CPU,
    CudaReport,
    Device,
    cuda_facts,
    describe_facts,
    nvidia_driver_version,
    parse_device,
    resolve_device,
)
from qwen3_quant.errors import DeviceError, UsageError

NO_CUDA_TORCH = CudaReport("2.13.0+cpu", None)
CUDA_NO_GPU = CudaReport("2.11.0+cu128", "12.8", 0)
TWO_GPUS = CudaReport(
    "2.11.0+cu128",
    "12.8",
    2,
    names=("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"),
    free_bytes=(70 * 1024**3, 10 * 1024**3),
    total_bytes=(80 * 1024**3, 80 * 1024**3),
    driver="550.54.15",
)


@pytest.mark.parametrize(
    "spec, parsed",
    [
        (None, ("auto", None)),
        ("auto", ("auto", None)),
        ("CPU", ("cpu", None)),
        ("cuda", ("cuda", None)),
        ("cuda:1", ("cuda", 1)),
        (" cuda:0 ", ("cuda", 0)),
    ],
)
def test_parse_device(spec, parsed):
    assert parse_device(spec) == parsed


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "cpu:0", "auto:1", "mps", "cuda:-1"])
def test_parse_device_refuses_other_spellings(spec):
    with pytest.raises(UsageError, match="unknown device") as e:
        parse_device(spec)
    assert "cuda:N" in e.value.hint


def test_auto_is_the_first_gpu_when_torch_sees_one_else_the_cpu():
    assert resolve_device("auto", TWO_GPUS).torch == "cuda:0"
    assert resolve_device(None, NO_CUDA_TORCH).torch == "cpu"
    assert resolve_device("auto", CUDA_NO_GPU).torch == "cpu"


def test_cpu_never_asks_torch(monkeypatch):
    import qwen3_quant.device as d

    monkeypatch.setattr(d, "probe_cuda", lambda *a, **k: pytest.fail("asked torch"))
    dev = resolve_device("cpu")
    assert dev == CPU and not dev.is_cuda and dev.facts["device"] == "cpu"


def test_cuda_index_and_facts():
    dev = resolve_device("cuda:1", TWO_GPUS)
    assert (dev.kind, dev.index, dev.torch) == ("cuda", 1, "cuda:1")
    assert dev.facts["free_vram_bytes"] == 10 * 1024**3
    assert dev.facts["driver"] == "550.54.15" and dev.facts["cuda"] == "12.8"
    assert dev.describe() == "NVIDIA H100 80GB HBM3 (cuda:1, driver 550.54.15, CUDA 12.8, 80 GiB)"


def test_cuda_with_a_cpu_only_torch_is_one_line_naming_the_fix():
    with pytest.raises(DeviceError) as e:
        resolve_device("cuda", NO_CUDA_TORCH)
    assert "built without CUDA" in e.value.message and "2.13.0+cpu" in e.value.message
    assert "--device cpu" in e.value.hint and "\n" not in e.value.one_line()


def test_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceError, match="sees no GPU") as e:
        resolve_device("cuda:0", CUDA_NO_GPU)
    assert "CUDA_VISIBLE_DEVICES=''" in e.value.message


def test_cuda_index_out_of_range():
    with pytest.raises(DeviceError, match=r"sees 2 GPU\(s\) \(cuda:0 to cuda:1\)") as e:
        resolve_device("cuda:2", TWO_GPUS)
    assert "cuda:1" in e.value.hint


def test_this_machine_resolves_auto_and_cpu_without_error():
    import torch

    dev = resolve_device("auto")
    assert dev.is_cuda == torch.cuda.is_available()
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            resolve_device("cuda")


def test_describe_facts_cpu_and_gpu():
    assert describe_facts({"device": "cpu", "name": "x86_64 CPU", "threads": 2}) == "x86_64 CPU, 2 threads"
    facts = cuda_facts(TWO_GPUS, 0)
    assert describe_facts(facts).startswith("NVIDIA H100 80GB HBM3 (cuda:0")


def test_driver_version_from_nvidia_smi(monkeypatch):
    import qwen3_quant.device as d

    monkeypatch.setattr(d.shutil, "which", lambda _n: "/usr/bin/nvidia-smi")

    def run(cmd, **_kw):
        assert "--query-gpu=driver_version" in cmd
        return types.SimpleNamespace(stdout="550.54.15\n550.54.15\n")

    assert nvidia_driver_version(run) == "550.54.15"
    monkeypatch.setattr(d.shutil, "which", lambda _n: None)
    assert nvidia_driver_version(run) is None


# --- what the quantisers are handed -----------------------------------------------------------


def test_quantize_refuses_cuda_before_loading_anything(monkeypatch, tmp_path):
    import qwen3_quant.device as d
    import qwen3_quant.quantize as q

    monkeypatch.setattr(d, "probe_cuda", lambda *a, **k: NO_CUDA_TORCH)
    monkeypatch.setattr(q, "resolve_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(DeviceError, match="built without CUDA"):
        q.quantize("Qwen3-Micro", "gguf", out_root=tmp_path, device="cuda", types=["Q8_0"])
    with pytest.raises(UsageError, match="unknown device"):
        q.quantize("Qwen3-Micro", "gguf", out_root=tmp_path, device="gpu0", types=["Q8_0"])


def test_quantise_device_follows_the_format():
    from qwen3_quant.formats import get_format
    from qwen3_quant.quantize import quantise_device

    assert get_format("gptq").gpu_quantise and get_format("gguf").gpu_quantise
    assert not get_format("onnx").gpu_quantise
    assert quantise_device(get_format("gptq"), "cpu").torch == "cpu"


def test_vram_refusal_names_need_and_free():
    from qwen3_quant.quantize import check_fits_gpu

    dev = resolve_device("cuda:1", TWO_GPUS)  # 10 GiB free
    check_fits_gpu(dev, [("W4g128", 9 * 1024**3), ("Q8_0", None)])
    with pytest.raises(DeviceError, match=r"W4g128 needs about 12.0 GiB .* has 10.0 GiB free") as e:
        check_fits_gpu(dev, [("W4g128", 12 * 1024**3)])
    assert "--device cpu" in e.value.hint


def test_gptqmodel_worker_sees_only_the_chosen_gpu():
    from qwen3_quant.formats.gptqmodel.quantizer import _worker_env, visible_devices

    gpu1 = Device("cuda", 1)
    assert visible_devices(gpu1, None) == "1"
    assert visible_devices(gpu1, "4,6") == "6"  # torch's cuda:1 among those already visible
    assert visible_devices(CPU, "0") == ""  # a CPU job sees no GPU (GPTQModel would pick one)
    assert visible_devices(None, None) == ""
    env = _worker_env(gpu1, base={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["HF_HUB_OFFLINE"] == "1"


def test_gptqmodel_worker_settings_by_device():
    from qwen3_quant.formats.gptqmodel import worker

    backends = types.SimpleNamespace(AWQ_TORCH="awq_torch")
    assert worker.quantize_backend("awq", "cpu", backends) == "awq_torch"
    assert worker.quantize_backend("awq", "cuda:0", backends) is None  # GPTQModel's CUDA AWQ GEMM
    assert worker.quantize_backend("gptq", "cpu", backends) is None
    assert worker.load_kwargs({"device": "cpu"}) == {"device": "cpu"}
    assert worker.load_kwargs({}) == {"device": "cpu"}
    # on CUDA GPTQModel refuses device= beside QuantizeConfig.device
    assert worker.load_kwargs({"device": "cuda:0"}) == {}


@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
@pytest.mark.parametrize("method", ["gptq", "awq", "rtn"])
def test_gptqmodel_quantize_config_carries_the_device(device, method):
    pytest.importorskip("gptqmodel")
    from qwen3_quant.formats.gptqmodel.libenv import import_gptqmodel
    from qwen3_quant.formats.gptqmodel.worker import quantize_config

    import_gptqmodel()
    job = {"method": method, "bits": 4, "group_size": 128, "sym": True, "act_order": False}
    job |= {"damp_percent": 0.05, "device": device}
    qc = quantize_config(job)
    if device == "cpu":
        assert qc.device is None  # load(device="cpu") places it
    else:
        assert str(qc.device) == "cuda:0"


def test_gptqmodel_job_records_the_device(monkeypatch, tmp_path, micro_dense):
    """The job file the worker reads says where to compute; the worker's environment pins the GPU."""
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.gptqmodel import quantizer
    from qwen3_quant.formats.gptqmodel.config import parse_options
    from qwen3_quant.sources import resolve_model

    seen = {}

    def fake_worker(job, work, progress, device=None):
        seen["job"], seen["device"] = job, device
        raise quantizer.QuantizerFailedError("stop here")

    monkeypatch.setattr(quantizer, "run_worker", fake_worker)
    src = resolve_model(str(micro_dense))
    cfg = parse_options("gptq", {"calib_samples": 2})
    gpu = Device("cuda", 3)
    with pytest.raises(quantizer.QuantizerFailedError):
        quantizer.quantize_artifact(
            src, inspect_checkpoint(src.path), cfg, tmp_path / "a", fmt="gptq", device=gpu
        )
    assert seen["job"]["device"] == "cuda:0" and seen["device"] is gpu
    json.dumps(seen["job"])  # what the worker reads is plain JSON


# --- what the runners are handed --------------------------------------------------------------


def test_llama_cpp_offload_plan():
    from qwen3_quant.formats.gguf.runner import ALL_LAYERS, offload_plan

    assert offload_plan(CPU, True) == (0, "CPU")
    n, note = offload_plan(Device("cuda", 0), True)
    assert n == ALL_LAYERS and "offloaded to cuda:0" in note
    n, note = offload_plan(Device("cuda", 0), False)
    assert n == 0 and "no GPU offload" in note


def test_onnxruntime_providers():
    from qwen3_quant.formats.onnx.runner import providers_for

    assert providers_for(CPU, ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == [
        "CPUExecutionProvider"
    ]
    providers, note = providers_for(Device("cuda", 1), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers[0] == ("CUDAExecutionProvider", {"device_id": 1}) and "cuda:1" in note
    providers, note = providers_for(Device("cuda", 0), ["CPUExecutionProvider"])
    assert providers == ["CPUExecutionProvider"] and "onnxruntime-gpu" in note


def test_transformers_runner_places_the_model(micro_dense):
    from qwen3_quant.eval.transformers_runner import TransformersRunner

    with TransformersRunner(micro_dense, ctx=32, device=CPU) as r:
        assert r.load_kwargs().keys() == {"dtype"}
        assert r.backend == "float32 on cpu"
        assert r.logits([1, 2, 3]).shape[0] == 3
    fake = object.__new__(TransformersRunner)
    fake.device, fake.torch = Device("cuda", 1), __import__("torch")
    assert fake.load_kwargs()["device_map"] == {"": "cuda:1"}


def test_transformers_runner_logits_in_blocks_equal_the_window_logits(micro_dense, monkeypatch):
    import numpy as np

    from qwen3_quant.eval import transformers_runner
    from qwen3_quant.eval.transformers_runner import TransformersRunner

    monkeypatch.setattr(transformers_runner, "LOGIT_BLOCK", 128)
    ids = [int(i) for i in np.random.default_rng(0).integers(0, 8000, 300)]
    with TransformersRunner(micro_dense, ctx=512, device=CPU) as r:
        whole = r.logits(ids)
        blocks = list(r.logits_blocks(ids))
    assert [a for a, _ in blocks] == [0, 128, 256] and [len(b) for _, b in blocks] == [128, 128, 44]
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), whole, atol=1e-5)


def test_gptqmodel_runner_names_its_kernels():
    import torch

    from qwen3_quant.formats.gptqmodel.runner import GPTQModelRunner, quant_kernels

    class MarlinQuantLinear(torch.nn.Module):
        pass

    model = torch.nn.Sequential(MarlinQuantLinear(), torch.nn.Linear(2, 2), MarlinQuantLinear())
    assert quant_kernels(model) == ["MarlinQuantLinear"]
    assert GPTQModelRunner.cuda_compute_dtype == "float16" and GPTQModelRunner.compute_dtype == "float32"


def test_evaluation_records_the_device_and_refuses_a_missing_gpu(monkeypatch, micro_dense, tmp_path):
    import qwen3_quant.device as d
    from qwen3_quant.eval.evaluate import EvalOptions, evaluate

    opts = EvalOptions(max_tokens=40, ctx=16, speed=False, reference_dir=tmp_path, device="cpu")
    res = evaluate(micro_dense, options=opts)
    assert res.device["device"] == "cpu" and res.backend == "float32 on cpu"
    monkeypatch.setattr(d, "probe_cuda", lambda *a, **k: NO_CUDA_TORCH)
    with pytest.raises(DeviceError):
        evaluate(micro_dense, options=EvalOptions(max_tokens=40, ctx=16, device="cuda"))


# --- GPU memory estimates and the build plan --------------------------------------------------


def test_gptqmodel_gpu_working_set_is_one_layer_not_the_model():
    """GPTQModel keeps the model on the host and quantises one decoder layer at a time on the GPU:
    the estimate holds one layer, its Hessians, the calibration activations and the embedding
    table, so it grows with the layer's width, not with the layer count."""
    from qwen3_quant.catalog import catalog
    from qwen3_quant.catalog.architecture import param_counts
    from qwen3_quant.formats.base import largest_layer_params
    from qwen3_quant.formats.gptqmodel import gpu_working_set

    cat = catalog()
    for name in ("Qwen3-0.6B", "Qwen3-8B", "Qwen3-32B", "Qwen3-235B-A22B"):
        arch = cat[name].arch
        need = gpu_working_set(arch)
        assert need > 2 * largest_layer_params(arch) + arch.vocab_size * arch.hidden_size * 2
        assert need < 2 * param_counts(arch).total or name == "Qwen3-0.6B"  # well below the bf16 model
    # 32B and 8B have 64 and 36 layers of different widths: the estimate follows the width
    assert gpu_working_set(cat["Qwen3-32B"].arch) < 2 * gpu_working_set(cat["Qwen3-8B"].arch)


def _spec(tmp_path, device: str, model: str = "Qwen3-0.6B"):
    from qwen3_quant.build.spec import parse_build

    data = {"build": {"models": [model], "device": device}, "format": [{"name": "gptq", "bits": 4}]}
    return parse_build(data, source=str(tmp_path / "b.toml"), out=tmp_path / "out")


def test_build_plan_refuses_a_cell_the_gpu_cannot_hold(tmp_path):
    from qwen3_quant.build.run import plan

    small = CudaReport("2.11", "12.8", 1, names=("Small GPU",), free_bytes=(10**9,), total_bytes=(10**9,))
    (row,) = plan(_spec(tmp_path, "cuda"), cuda=small)
    assert row.device == "cuda:0" and row.gpu_peak_bytes and row.status == "skip"
    assert "GB of GPU memory, cuda:0 has 1 GB" in row.reason
    (row,) = plan(_spec(tmp_path, "auto"), cuda=TWO_GPUS)
    assert row.device == "cuda:0" and row.status == "todo", row.reason
    (row,) = plan(_spec(tmp_path, "cpu"), cuda=TWO_GPUS)
    assert row.device == "cpu" and row.gpu_peak_bytes is None
    (row,) = plan(_spec(tmp_path, "cuda"), cuda=NO_CUDA_TORCH)
    assert row.status == "skip" and "built without CUDA" in row.reason


def test_build_device_settings(tmp_path):
    from qwen3_quant.build.run import cell_provenance
    from qwen3_quant.build.spec import parse_build

    data = {
        "build": {"models": ["Qwen3-Micro"], "device": "cuda:1"},
        "format": [{"name": "gguf", "types": ["Q8_0"], "device": "cpu"}, {"name": "gptq", "bits": 4}],
    }
    spec = parse_build(data, source="b.toml", out=tmp_path)
    cells = {c.format: c for c in spec.cells()}
    assert cells["gguf"].device == "cpu" and cells["gptq"].device == "cuda:1"
    assert "device" not in cells["gguf"].option_dict()  # not an input of the artifact
    assert cell_provenance(spec, cells["gptq"]).command.endswith("--device cuda:1")
    over = parse_build(data, source="b.toml", out=tmp_path, device="cpu")
    assert {c.device for c in over.cells()} == {"cpu"}
    with pytest.raises(UsageError, match=r"\[\[format\]\] gguf device: unknown device 'gpu'"):
        parse_build({**data, "format": [{"name": "gguf", "device": "gpu"}]}, source="b.toml")


# --- scheduling GPU and CPU cells -------------------------------------------------------------


class _FakeProc:
    """A worker that finishes after a few polls; records what ran at the same time."""

    def __init__(self, cid, env, log, running, polls=3):
        self.cid, self.env, self.left, self.returncode = cid, env, polls, None
        self.running = running
        running[cid] = (env or {}).get("CUDA_VISIBLE_DEVICES")
        log.append(dict(running))

    def poll(self):
        self.left -= 1
        if self.left <= 0:
            self.returncode = 0
            self.running.pop(self.cid, None)
            return 0
        return None


def test_local_executor_runs_one_gpu_cell_per_gpu_beside_cpu_cells(tmp_path, monkeypatch):
    from qwen3_quant.build import executors
    from qwen3_quant.build.run import PlanRow
    from qwen3_quant.build.spec import Cell

    monkeypatch.setattr(executors.time, "sleep", lambda _s: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cells = [
        (Cell(f"M{i}", "gptq", "4", (), "auto"), "cuda:0")
        for i in range(3)  # three GPU cells
    ] + [(Cell(f"M{i}", "gguf", "Q8_0", (), "cpu"), "cpu") for i in range(2)]
    cells.append((Cell("Pinned", "awq", "4", (), "cuda:1"), "cuda:1"))
    rows = [PlanRow(c, "x", "todo", peak_bytes=1, device=d) for c, d in cells]
    spec = _spec(tmp_path, "auto")
    log: list[dict] = []
    running: dict = {}

    def launch(cmd, env):
        cid = cmd[cmd.index("--cell") + 1]
        return _FakeProc(cid, env, log, running)

    executors.run_local(spec, rows, jobs=4, launch=launch, gpus=2)
    started = set().union(*log)
    assert started == {c.id for c, _ in cells}
    for snapshot in log:
        gpus = [v for k, v in snapshot.items() if "/gguf/" not in k]
        assert len(gpus) <= 2 and len(set(gpus)) == len(gpus), snapshot  # one cell per GPU
        assert len(snapshot) <= 4
        pinned = snapshot.get("Pinned/awq/4", "unset")
        assert pinned in ("unset", None)  # a pinned cell keeps the visible set: cuda:1 means GPU 1
    assert any(sum("/gguf/" in k for k in s) and len(s) > 2 for s in log)  # CPU cells ran beside
    assert executors.pick_gpu("cpu", {0}) is None and executors.pick_gpu("cuda:0", set()) == -1
    assert executors.gpu_env(1, False, base={})["CUDA_VISIBLE_DEVICES"] == "1"


def test_a_cell_on_cuda_is_routed_to_a_runner_with_its_gpu_memory(tmp_path):
    from qwen3_quant.build.run import plan
    from qwen3_quant.build.spec import parse_build

    runners = {
        "ubuntu-latest": {"ram": "16GB", "disk": "14GB"},
        "gpu-24gb": {"ram": "64GB", "disk": "200GB", "gpu": "24GB"},
    }
    rows = {}
    for device in ("auto", "cuda"):
        data = {
            "build": {"models": ["Qwen3-0.6B"], "device": device},
            "format": [{"name": "gptq", "bits": 4}],
            "runners": runners,
        }
        spec = parse_build(data, source="b.toml", out=tmp_path / device)
        (rows[device],) = plan(spec, cuda=TWO_GPUS)
    assert rows["auto"].runner.label == "ubuntu-latest" and rows["auto"].needs.gpu_bytes == 0
    assert rows["cuda"].runner.label == "gpu-24gb"
    assert rows["cuda"].needs.gpu_bytes == rows["cuda"].gpu_peak_bytes > 0


def test_card_shows_where_it_was_quantised_and_validated(tmp_path):
    from dataclasses import replace

    from qwen3_quant.artifact import Manifest
    from qwen3_quant.provenance import Provenance
    from qwen3_quant.publish import build_bundle
    from qwen3_quant.testing.fake_artifacts import make_artifact

    art = make_artifact(tmp_path, "gptq", variants={"W4g128": 4})
    m = Manifest.read(art)
    rec = m.variants["W4g128"]
    rec.provenance = replace(rec.provenance, quantised_on=cuda_facts(TWO_GPUS, 0))
    gpu = resolve_device("cuda", TWO_GPUS)
    rec.validation.result.update(
        device=gpu.facts,
        hardware=gpu.describe() + "; host x86_64",
        backend="MarlinQuantLinear (float16 on cuda:0)",
    )
    m.write(art)
    back = Manifest.read(art).variants["W4g128"].provenance
    assert (
        back == Provenance.from_dict(back.to_dict()) and back.quantised_on["name"] == "NVIDIA H100 80GB HBM3"
    )
    bundle = build_bundle(art, repo_id="org/Qwen3-8B-GPTQ-Int4")
    card = bundle.card
    from qwen3_quant.publish.bundle import published_manifest

    published = Manifest.from_dict(published_manifest(bundle, keep_source_path=False))
    assert published.variants["W4g128"].provenance.quantised_on["driver"] == "550.54.15"
    reproduce = card.split("## Reproduce", 1)[1]
    assert "Quantised on NVIDIA H100 80GB HBM3 (cuda:0, driver 550.54.15, CUDA 12.8, 80 GiB)." in reproduce
    assert "gptqmodel (MarlinQuantLinear (float16 on cuda:0)), validated on NVIDIA H100" in card
