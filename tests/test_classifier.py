from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mdgen import params
from mdgen.accel import set_threads
from mdgen.classifier import (accuracy, features, load_classifier, predict, prepare, save_classifier,
                              time_shift, train_classifier)
from mdgen.images import load_images
from tests.conftest import REPO

# params.yaml's classifier section, shrunk
TINY = replace(params.load(REPO / "params.yaml").classifier, steps=40, batch_size=16, lr=3e-3, weight_decay=1e-4,
               image_size=16, width=4, augment=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread beats two (conftest)


def toy_set(n_per_class: int, seed: int, size: int = 32, classes: int = 3):
    """Noisy images whose class is the row of one bright horizontal band: trivially separable."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(classes):
        for _ in range(n_per_class):
            im = rng.uniform(0, 90, (size, size, 3))
            band = slice(c * size // classes, (c + 1) * size // classes)
            im[band] += 150
            images.append(im.clip(0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.array(labels)


@pytest.fixture(scope="module")
def toy():
    return toy_set(16, seed=0), toy_set(10, seed=1)


def test_learns_a_separable_toy_set(toy):
    (x, y), (xt, yt) = toy
    model = train_classifier(x, y, 3, TINY, seed=0)
    assert accuracy(model, xt, yt) > 0.9
    probs = predict(model, xt)
    assert probs.shape == (len(xt), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert features(model, xt).shape == (len(xt), 8 * TINY.width)


@pytest.mark.parametrize("width", [4, 8])  # below 8 channels ATen's kernels, from 8 oneDNN's (_conv_kernels)
def test_bf16_training_learns_and_differs_from_fp32(toy, width):
    (x, y), (xt, yt) = toy
    fp32, bf16 = (train_classifier(x, y, 3, replace(TINY, width=width, precision=p), seed=0) for p in ("fp32", "bf16"))
    assert accuracy(bf16, xt, yt) > 0.9 and accuracy(fp32, xt, yt) > 0.9
    # the step really ran in bf16, and the model comes back fp32 and contiguous, as scoring expects
    assert not torch.equal(fp32.head.weight, bf16.head.weight)
    assert all(v.dtype == torch.float32 and v.is_contiguous()
               for v in bf16.state_dict().values() if v.is_floating_point())


def test_training_is_deterministic_for_a_seed(toy):
    (x, y), (xt, _) = toy
    config = replace(TINY, steps=8)
    a, b = train_classifier(x, y, 3, config, seed=5), train_classifier(x, y, 3, config, seed=5)
    c = train_classifier(x, y, 3, config, seed=6)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert np.array_equal(features(a, xt), features(b, xt))
    assert not np.array_equal(features(a, xt), features(c, xt))


def test_save_load_roundtrip(tmp_path, toy):
    (x, y), (xt, _) = toy
    model = train_classifier(x, y, 3, replace(TINY, steps=4), seed=0)
    save_classifier(model, tmp_path / "c.safetensors", users=["ID_1", "ID_2", "ID_3"])
    loaded, meta = load_classifier(tmp_path / "c.safetensors")
    assert meta["users"] == ["ID_1", "ID_2", "ID_3"]
    assert loaded.config == model.config
    assert np.array_equal(predict(loaded, xt), predict(model, xt))
    with pytest.raises(ValueError, match="2 users for a 3-class model"):
        save_classifier(model, tmp_path / "bad.safetensors", users=["ID_1", "ID_2"])


def test_prepare_matches_loading_the_file_at_that_size(tmp_path):
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(im).save(tmp_path / "a.png")
    direct = prepare(load_images([tmp_path / "a.png"], 16), 16)
    resized = prepare(im[None], 16)
    assert direct.shape == (1, 3, 16, 16) and torch.equal(direct, resized)
    assert direct.min() >= -1 and direct.max() <= 1


def test_time_shift_moves_only_along_time():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    y = time_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    # every output column is some input column (reflected shift): rows never move
    for i in range(2):
        for col in range(8):
            assert any(torch.equal(y[i, :, :, col], x[i, :, :, j]) for j in range(8))


def test_bad_inputs_name_the_problem(toy):
    (x, y), _ = toy
    with pytest.raises(ValueError, match="labels span 0..2, outside 0..1"):
        train_classifier(x, y, 2, TINY, seed=0)
    with pytest.raises(ValueError, match="images and .* labels"):
        train_classifier(x, y[:-1], 3, TINY, seed=0)


def test_threads_zero_keeps_torchs_setting():
    n = torch.get_num_threads()
    set_threads(0)  # 0 keeps torch's setting
    assert torch.get_num_threads() == n


def test_classifiers_trained_side_by_side_score_as_in_one_process():
    from mdgen.classifier import Job, fit_and_score

    (x, y), (xv, yv) = toy_set(6, 0), toy_set(4, 1)
    # width 8: see test_metrics' augmentation test (oneDNN and 4 channels on AVX2-only CPUs)
    recipe = replace(TINY, steps=4, width=8, threads=1)
    jobs = [Job(x, y, seed, {"val": (xv, yv), "train": (x, y)}) for seed in (0, 1, 2)]
    # a job's own step count (the pool starts the longest first, and still answers in job order)
    jobs += [Job(x, y, 0, {"val": (xv, yv), "train": (x, y)}, steps=recipe.steps), Job(x, y, 0, {"val": (xv, yv)}, 1)]
    one = fit_and_score(jobs, 3, recipe, workers=1)
    lines = []
    assert fit_and_score(jobs, 3, recipe, workers=2, say=lines.append) == one
    assert len(lines) == 5 and all(set(r) == {"val", "train"} for r in one[:4]) and one[3] == one[0]
    assert set(one[4]) == {"val"}
    # the job's steps are what it trains: 40 learn the toy set, the recipe's 4 do not
    tests = {"val": (xv, yv), "train": (x, y)}
    long, short = fit_and_score([Job(x, y, 0, tests, 40), Job(x, y, 0, tests)], 3, recipe)
    assert long["train"] > short["train"]


def test_a_kept_model_from_the_pool_is_the_model_train_classifier_returns():
    """The `classifier` stage takes its judge from a pool of classifiers: the weights and BN statistics of the
    one trained alone, bitwise, in eval mode; jobs without `keep_model` bring back none."""
    from mdgen.classifier import Job, fit_classifiers

    (x, y), (xv, yv) = toy_set(6, 0), toy_set(4, 1)
    recipe = replace(TINY, steps=6, width=8, threads=1)
    alone = train_classifier(x, y, 3, recipe, seed=2)
    jobs = [Job(x, y, 1, {"val": (xv, yv)}), Job(x, y, 2, {"val": (xv, yv)}, keep_model=True)]
    for workers in (1, 2):
        (score_1, none), (score_2, kept) = fit_classifiers(jobs, 3, recipe, workers=workers)
        assert none is None and not kept.training and set(score_2) == {"val"}
        assert kept.state_dict().keys() == alone.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), alone.state_dict().values()))
