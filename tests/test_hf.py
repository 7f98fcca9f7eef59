"""Hugging Face ``transformers`` models: ``"hf:<folder>"`` and ``"hf:<repo id>"``.

Each family is a tiny random model saved with ``save_pretrained`` beside its image
processor; skfeat's features are checked against the model's own outputs
(``hidden_states``, ``pooler_output``, ``image_embeds``) on the same pixels.
"""

from __future__ import annotations

import json
import pickle
import time

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from sklearn.base import clone  # noqa: E402

from skfeat import PretrainedCNNFeaturizer, list_layers  # noqa: E402
from skfeat._backends import _hf, resolve_backend  # noqa: E402
from skfeat._preprocess import normalize_batch, resize_and_crop, stack_images  # noqa: E402
from skfeat.exceptions import UnknownModelError, WeightsUnavailableError  # noqa: E402

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_VIT = {**TINY, "intermediate_size": 64, "image_size": 32, "patch_size": 8}
SQUARE_32 = {"size": {"height": 32, "width": 32}}


def _clip_model() -> object:
    vision = transformers.CLIPVisionConfig(**TINY_VIT, projection_dim=16)
    text = transformers.CLIPTextConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    config = transformers.CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    return transformers.CLIPModel(config)


def _siglip_model() -> object:
    text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = transformers.SiglipConfig(
        text_config={**text, "intermediate_size": 64, "bos_token_id": 1, "eos_token_id": 2},
        vision_config=TINY_VIT,
    )
    return transformers.SiglipModel(config)


# family -> (model, processor, a block, its index in hidden_states, prefix tokens, class token)
FAMILIES = {
    "vit": (
        lambda: transformers.ViTModel(transformers.ViTConfig(**TINY_VIT)),
        lambda: transformers.ViTImageProcessor(**SQUARE_32),
        "layers.0",
        1,
        True,
    ),
    "dinov2": (
        lambda: transformers.Dinov2Model(transformers.Dinov2Config(**TINY_VIT)),
        lambda: transformers.BitImageProcessor(
            size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}
        ),
        "encoder.layer.1",
        1,
        True,
    ),
    "dinov2_registers": (
        lambda: transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(**TINY_VIT, num_register_tokens=4)
        ),
        lambda: transformers.BitImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        "encoder.layer.0",
        5,
        True,
    ),
    "siglip": (
        lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**TINY_VIT)),
        lambda: transformers.SiglipImageProcessor(**SQUARE_32),
        "encoder.layers.1",
        0,
        False,
    ),
    "siglip_pair": (
        _siglip_model,
        lambda: transformers.SiglipImageProcessor(**SQUARE_32),
        "encoder.layers.1",
        0,
        False,
    ),
    "clip": (
        _clip_model,
        lambda: transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        "vision_model.encoder.layers.0",
        1,
        True,
    ),
    "deit": (
        lambda: transformers.DeiTModel(transformers.DeiTConfig(**TINY_VIT)),
        lambda: transformers.DeiTImageProcessor(
            size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}
        ),
        "layers.1",
        2,
        True,
    ),
    "beit": (
        lambda: transformers.BeitModel(transformers.BeitConfig(**TINY_VIT)),
        lambda: transformers.BeitImageProcessor(**SQUARE_32),
        "layers.0",
        1,
        True,
    ),
    "resnet": (
        lambda: transformers.ResNetModel(
            transformers.ResNetConfig(
                embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
            )
        ),
        lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 32}),
        "encoder.stages.1",
        None,
        False,
    ),
    "convnext": (
        lambda: transformers.ConvNextModel(
            transformers.ConvNextConfig(
                num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32
            )
        ),
        lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.8),
        "encoder.stages.1",
        None,
        False,
    ),
}


def _save(folder, family):
    make_model, make_processor, *_ = FAMILIES[family]
    torch.manual_seed(0)
    model = make_model().eval()
    for parameter in model.parameters():  # random init leaves some at 0 or 1
        parameter.data.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    make_processor().save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=list(FAMILIES))
def saved(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, str(folder), _save(folder, request.param)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(3, 40, 56, 3), dtype=np.uint8)


def _features(model, X, **params):
    return PretrainedCNNFeaturizer(model, n_jobs=1, device="cpu", precision="fp32", **params).fit(X)


def _pixels(model, X):
    """The batch skfeat feeds the network, from its recipe."""
    config = resolve_backend(model, "DEFAULT").data_config()
    batch = stack_images([resize_and_crop(image, config) for image in X])
    return normalize_batch(batch, config, torch.float32)


def _reference(family, model, pixels):
    """The model's own embedding and hidden states, from transformers."""
    with torch.no_grad():
        if family == "clip":
            vision = model.vision_model(pixel_values=pixels, output_hidden_states=True)
            embedding = model.visual_projection(vision.pooler_output)
            return embedding, vision.hidden_states
        if family == "siglip_pair":  # the image side of an image-text model
            vision = model.vision_model(pixel_values=pixels, output_hidden_states=True)
            return vision.pooler_output, vision.hidden_states
        output = model(pixel_values=pixels, output_hidden_states=True)
    return output.pooler_output.flatten(1), output.hidden_states  # ResNet's is (N, C, 1, 1)


def test_features_match_the_models_own_outputs(saved, images):
    family, folder, model = saved
    _, _, block, prefix, _ = FAMILIES[family]
    name = f"hf:{folder}"
    embedding, hidden = _reference(family, model, _pixels(name, images))
    index = int(block.rpartition(".")[2]) + 1  # hidden_states[0] is the embeddings' output
    got = _features(name, images, layer="penultimate").transform(images)
    np.testing.assert_allclose(got, embedding.numpy(), atol=1e-4)
    raw = _features(name, images, layer=block, pooling="flatten", intermediate_norm="none")
    tokens = hidden[index]
    np.testing.assert_allclose(raw.transform(images), tokens.flatten(1).numpy(), atol=1e-4)
    # By default a block goes through the model's own final norm, as its head reads it.
    normed = _features(name, images, layer=block, pooling="flatten")
    norm_name = normed.layer_norms_[block]
    if norm_name is not None and normed.layer_norms_ != {block: None}:
        with torch.no_grad():
            owner = model.vision_model if family == "siglip_pair" else model
            norm = owner.get_submodule(norm_name.removeprefix("vision_model."))
            expected_normed = norm(tokens)
        np.testing.assert_allclose(
            normed.transform(images), expected_normed.flatten(1).numpy(), atol=1e-4
        )
    pooling = "cls" if FAMILIES[family][4] else "avg"
    pooled = _features(
        name, images, layer=block, pooling=pooling, intermediate_norm="none"
    ).transform(images)
    if family in ("convnext", "resnet"):
        expected = tokens.mean(dim=(2, 3))
    elif pooling == "cls":
        expected = tokens[:, 0]
    else:
        expected = tokens[:, prefix:].mean(dim=1)
    np.testing.assert_allclose(pooled, expected.numpy(), atol=1e-4)


def test_recipe_matches_the_image_processor(saved, images):
    _, folder, _ = saved
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    theirs = processor(images=list(images), return_tensors="pt").pixel_values
    ours = _pixels(f"hf:{folder}", images)
    assert ours.shape == theirs.shape
    # transformers 5 resizes uint8 with torchvision's antialiased filter, as skfeat does.
    assert (ours - theirs).abs().max().item() < 1e-5


def test_layouts_come_from_the_config(saved):
    family, folder, _ = saved
    _, _, block, prefix, class_token = FAMILIES[family]
    layers = list_layers(f"hf:{folder}", details=True)
    if family in ("convnext", "resnet"):
        assert layers[block].layout == "map"
    else:
        assert (layers[block].layout, layers[block].prefix_tokens) == ("tokens", prefix)
        assert layers[block].class_token is class_token
    assert layers["penultimate"].layout == "vector"
    assert _hf.EMBEDDING not in layers


def test_a_classifier_checkpoint_embeds_with_the_class_token_its_head_reads(tmp_path, images):
    torch.manual_seed(0)
    config = transformers.ViTConfig(**TINY_VIT, num_labels=3)
    classifier = transformers.ViTForImageClassification(config).eval()
    classifier.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(**SQUARE_32).save_pretrained(tmp_path)
    name = f"hf:{tmp_path}"
    assert "pooler" not in list_layers(name)  # its weights are not in the checkpoint
    seen = []
    classifier.classifier.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    with torch.no_grad():
        classifier(pixel_values=_pixels(name, images))
    got = _features(name, images).transform(images)
    np.testing.assert_allclose(got, seen[0].numpy(), atol=1e-4)


def test_pickles_without_weights_and_clones(saved, images):
    _, folder, _ = saved
    featurizer = _features(f"hf:{folder}", images)
    expected = featurizer.transform(images)
    blob = pickle.dumps(featurizer)
    assert len(blob) < 20_000
    assert b"safetensors" not in blob
    np.testing.assert_array_equal(pickle.loads(blob).transform(images), expected)
    np.testing.assert_array_equal(clone(featurizer).fit_transform(images), expected)


def test_weights_fingerprint_follows_the_folder(tmp_path):
    _save(tmp_path, "vit")
    backend = resolve_backend(f"hf:{tmp_path}", "DEFAULT")
    before = backend.key
    assert backend.key == before
    torch.manual_seed(1)
    transformers.ViTModel(transformers.ViTConfig(**TINY_VIT)).save_pretrained(tmp_path)
    assert backend.key != before
    assert resolve_backend(f"hf:{tmp_path}", None).key != backend.key
    assert backend.data_config().interpolation == "bilinear"
    transformers.ViTImageProcessor(**SQUARE_32, resample=3).save_pretrained(tmp_path)
    assert backend.data_config().interpolation == "bicubic"  # the recipe is read again


def test_the_cache_serves_no_features_of_replaced_weights(tmp_path, images):
    folder = tmp_path / "model"
    _save(folder, "vit")
    cache = str(tmp_path / "cache")
    first = _features(f"hf:{folder}", images, cache=cache).transform(images)
    np.testing.assert_array_equal(
        _features(f"hf:{folder}", images, cache=cache).transform(images), first
    )
    torch.manual_seed(1)
    transformers.ViTModel(transformers.ViTConfig(**TINY_VIT)).save_pretrained(folder)
    fresh = _features(f"hf:{folder}", images).transform(images)
    cached = _features(f"hf:{folder}", images, cache=cache).transform(images)
    assert not np.allclose(fresh, first, atol=1e-3)
    np.testing.assert_array_equal(cached, fresh)


def test_random_init_differs_from_the_checkpoint_and_repeats(tmp_path, images):
    _save(tmp_path, "vit")
    pretrained = _features(f"hf:{tmp_path}", images).transform(images)
    random_init = _features(f"hf:{tmp_path}", images, weights=None).transform(images)
    again = _features(f"hf:{tmp_path}", images, weights=None).transform(images)
    assert not np.allclose(pretrained, random_init, atol=1e-3)
    np.testing.assert_array_equal(random_init, again)


def test_offline_hub_id_not_in_the_cache_fails_fast(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(
        WeightsUnavailableError,
        match=r"'skfeat-test/absent-model': HF_HUB_OFFLINE is set, and it is not in the "
        r"local cache.*hf download.*model='hf:/path/to/folder'",
    ):
        PretrainedCNNFeaturizer("hf:skfeat-test/absent-model").fit(np.zeros((1, 8, 8, 3)))
    assert time.perf_counter() - start < 5.0


def test_unreachable_hub_falls_back_to_the_cache(tmp_path, monkeypatch, images):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--skfeat-test--tiny-vit"
    snapshot = repo / "snapshots" / commit
    model = _save(snapshot, "vit")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(_hf, "unreachable", lambda url: "URLError: no network here")
    _hf._hub_unreachable.cache_clear()
    try:
        name = "hf:skfeat-test/tiny-vit"
        backend = resolve_backend(name, "DEFAULT")
        assert backend.weights_fingerprint() == f"skfeat-test/tiny-vit@{commit}"
        got = _features(name, images).transform(images)
        with torch.no_grad():
            expected = model(pixel_values=_pixels(name, images)).pooler_output
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
        with pytest.raises(WeightsUnavailableError, match=r"did not answer \(URLError"):
            resolve_backend("hf:skfeat-test/other", "DEFAULT")
    finally:
        _hf._hub_unreachable.cache_clear()


def test_names_and_weights_are_checked(tmp_path):
    with pytest.raises(UnknownModelError, match=r"folder '/no/such/folder'.*does not exist"):
        resolve_backend("hf:/no/such/folder", "DEFAULT")
    with pytest.raises(UnknownModelError, match=r"neither an existing folder nor a valid"):
        resolve_backend("hf:bad--id!", "DEFAULT")
    _save(tmp_path, "vit")
    with pytest.raises(UnknownModelError, match=r"weights='IMAGENET1K_V1' is not valid for Hug"):
        resolve_backend(f"hf:{tmp_path}", "IMAGENET1K_V1")
    with pytest.raises(UnknownModelError, match=r"is a folder, not a model name.*model='hf:/"):
        resolve_backend(str(tmp_path), "DEFAULT")


def test_a_folder_without_an_image_processor_is_refused(tmp_path):
    transformers.ViTModel(transformers.ViTConfig(**TINY_VIT)).save_pretrained(tmp_path)
    with pytest.raises(UnknownModelError, match=r"has no image processor config.*save_pretrained"):
        list_layers(f"hf:{tmp_path}")


def test_a_text_model_is_refused(tmp_path):
    config = transformers.BertConfig(**TINY, intermediate_size=64)
    transformers.BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(UnknownModelError, match=r"'bert' is not a vision backbone"):
        resolve_backend(f"hf:{tmp_path}", "DEFAULT")


def test_missing_weights_are_an_error_not_random(tmp_path, images):
    config = transformers.CLIPVisionConfig(**TINY_VIT, projection_dim=16)
    transformers.CLIPVisionModel(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["architectures"] = ["CLIPVisionModelWithProjection"]  # claims a projection
    (tmp_path / "config.json").write_text(json.dumps(saved))
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(tmp_path)
    with pytest.raises(WeightsUnavailableError, match=r"missing: visual_projection.weight"):
        _features(f"hf:{tmp_path}", images).transform(images)


@pytest.mark.parametrize(
    ("processor", "expected"),
    [
        (
            transformers.BitImageProcessor(
                size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}
            ),
            (256, 224, "bicubic", "center"),
        ),
        (transformers.ViTImageProcessor(), (224, 224, "bilinear", "squash")),
        (transformers.DeiTImageProcessor(), (256, 224, "bicubic", "squash")),
        (
            transformers.ConvNextImageProcessor(size={"shortest_edge": 224}),
            (256, 224, "bicubic", "center"),
        ),
        (transformers.ConvNextImageProcessor(), (384, 384, "bicubic", "squash")),
    ],
)
def test_recipes_of_the_processors(processor, expected):
    config = _hf.hf_data_config(processor, "a test")
    assert (config.resize_size, config.crop_size, config.interpolation, config.crop_mode) == (
        expected
    )
    assert config.mean == pytest.approx(tuple(processor.image_mean))


@pytest.mark.parametrize(
    ("processor", "match"),
    [
        (transformers.ViTImageProcessor(do_resize=False), "do_resize=False"),
        (transformers.ViTImageProcessor(size={"height": 224, "width": 320}), "not a square"),
        (transformers.ViTImageProcessor(resample=1), "resample=1"),
        (transformers.ViTImageProcessor(rescale_factor=1 / 127.5), "rescaled by"),
        (transformers.CLIPImageProcessor(do_center_crop=False), "not square"),
        (transformers.DetrImageProcessor(), "processor class is not one"),
    ],
)
def test_recipes_skfeat_cannot_reproduce_are_refused(processor, match):
    with pytest.raises(UnknownModelError, match=rf"preprocessing of a test.*{match}"):
        _hf.hf_data_config(processor, "a test")


@pytest.mark.slow
@pytest.mark.extras
def test_openvino_runs_a_hugging_face_model_as_torch_does(tmp_path, images):
    from skfeat._runtime import _openvino

    if not _openvino.available():
        pytest.skip("openvino not installed")
    _save(tmp_path, "dinov2_registers")
    name = f"hf:{tmp_path}"
    torch_rows = _features(name, images, runtime="torch", layer=["encoder.layer.1", "penultimate"])
    ov_rows = _features(name, images, runtime="openvino", layer=["encoder.layer.1", "penultimate"])
    np.testing.assert_allclose(ov_rows.transform(images), torch_rows.transform(images), atol=1e-4)


def test_a_bf16_checkpoint_loads_in_fp32(tmp_path):
    model = transformers.ViTModel(transformers.ViTConfig(**TINY_VIT)).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(**SQUARE_32).save_pretrained(tmp_path)
    loaded, _ = resolve_backend(f"hf:{tmp_path}", "DEFAULT").load()
    weight = loaded.embeddings.patch_embeddings.projection.weight
    assert weight.dtype == torch.float32
    assert torch.equal(
        weight.to(torch.bfloat16), model.embeddings.patch_embeddings.projection.weight
    )


def test_a_crop_the_model_cannot_take_is_refused(tmp_path):
    transformers.ViTModel(transformers.ViTConfig(**TINY_VIT)).save_pretrained(tmp_path)
    transformers.ViTImageProcessor().save_pretrained(tmp_path)  # 224 px for a 32 px model
    with pytest.raises(UnknownModelError, match=r"crops 224 px, but the model takes 32 px"):
        list_layers(f"hf:{tmp_path}")


def test_a_distilled_deit_has_no_single_embedding(tmp_path):
    config = transformers.DeiTConfig(**TINY_VIT, num_labels=3)
    transformers.DeiTForImageClassificationWithTeacher(config).save_pretrained(tmp_path)
    transformers.DeiTImageProcessor(
        size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(tmp_path)
    layers = list_layers(f"hf:{tmp_path}", details=True)
    assert "penultimate" not in layers  # its two heads read two tokens
    assert (layers["layernorm"].layout, layers["layernorm"].prefix_tokens) == ("tokens", 2)
