"""kzoo.data and kzoo.augment: shapes, ranges, determinism, presets, TFDS, offline errors."""

import numpy as np
import pytest
import tensorflow as tf

from kzoo import augment, data


def first_batch(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def all_images(dataset):
    return np.concatenate([images.numpy() for images, _ in dataset])


@pytest.mark.parametrize(
    "preset, shape",
    [("mnist", (28, 28, 1)), ("cifar", (32, 32, 3)), ("imagenet", (64, 64, 3))],
)
def test_each_preset_keeps_shape_dtype_and_value_range(preset, shape):
    rng = np.random.RandomState(0)
    images = (rng.uniform(0, 255, (40, *shape))).astype("uint8")
    options = {"imagenet": augment.imagenet(image_size=shape[0])}
    dataset = data.from_arrays(images, np.arange(40) % 5, batch_size=16,
                               augment=options.get(preset, preset), seed=1)
    x, y = first_batch(dataset)
    assert x.shape == (16, *shape) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.std() > 0.05


def test_digits_load_offline_as_28x28_in_unit_range():
    train = data.load("digits", "train", batch_size=2000, shuffle=False)
    test = data.load("digits", "test", batch_size=2000, shuffle=False)
    (x, y), (xt, yt) = first_batch(train), first_batch(test)
    assert x.shape == (1437, 28, 28, 1) and xt.shape == (360, 28, 28, 1)
    assert x.min() >= 0 and 0.9 < x.max() <= 1.0
    assert sorted(set(y)) == sorted(set(yt)) == list(range(10))


def test_the_same_seed_gives_the_same_batches_and_another_seed_does_not():
    def run(seed):
        return all_images(data.load("digits", batch_size=64, augment="mnist", seed=seed))

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_two_epochs_see_different_augmentations_of_the_same_order():
    dataset = data.load("digits", batch_size=64, augment="mnist", shuffle=False, seed=5)
    first, second = all_images(dataset), all_images(dataset)
    assert first.shape == second.shape
    assert not np.array_equal(first, second)


def test_shuffle_reshuffles_each_epoch():
    dataset = data.load("digits", batch_size=2000, seed=1)
    first, second = first_batch(dataset)[1], first_batch(dataset)[1]
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


@pytest.mark.parametrize("mix", [dict(mixup_alpha=0.2), dict(cutmix_alpha=1.0)])
def test_mixup_and_cutmix_labels_are_one_hot_mixtures_that_sum_to_one(mix):
    dataset = data.load("digits", batch_size=64, augment=augment.cifar(image_size=28, **mix), seed=2)
    x, y = first_batch(dataset)
    assert y.shape == (64, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert (y.max(axis=1) < 1.0 - 1e-3).any()  # Some images really were mixed.


def test_cifar_pad_and_crop_shifts_each_image_on_its_own():
    images = np.zeros((32, 32, 32, 1), "float32")
    images[:, 12:20, 12:20] = 1.0  # The same square in every image.
    dataset = data.from_arrays(images, np.zeros(32), batch_size=32, shuffle=False,
                               augment=augment.cifar(flip=False), seed=0)
    x, _ = first_batch(dataset)
    centres = {tuple(np.argwhere(image[..., 0] > 0.5).mean(axis=0).round(1)) for image in x}
    assert len(centres) > 8  # Per-image offsets, not one for the batch.
    shifts = np.abs(np.array(sorted(centres)) - 15.5)
    assert shifts.max() <= 4.0  # Never more than the 4-pixel pad.


def test_tfds_datasets_load_under_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        x, y = first_batch(data.load("cifar10", "train", batch_size=8, augment="cifar", seed=0))
        assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32 and x.max() <= 1.0
        assert y.dtype == np.int32 and y.max() < 10
        flowers_dataset = data.load("tf_flowers", "train", batch_size=4)
        flowers, _ = first_batch(flowers_dataset)
        assert flowers.shape == (4, 224, 224, 3)  # Variable-size images get the default size.
        assert len(flowers_dataset.class_names) == 5 and "daisy" in flowers_dataset.class_names
    assert data.load("digits", "test", batch_size=8).class_names == [str(d) for d in range(10)]


def test_missing_dataset_offline_gives_one_clear_error(tmp_path):
    with pytest.raises(data.DatasetUnavailableError) as error:
        data.load("mnist", data_dir=str(tmp_path), download=False)
    message = str(error.value)
    assert "'mnist'" in message and str(tmp_path) in message
    assert '"digits"' in message and "from_directory" in message


def test_from_directory_reads_a_folder_per_class(tmp_path):
    from PIL import Image

    rng = np.random.RandomState(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for index in range(3):
            Image.fromarray(rng.randint(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / name / f"{index}.png")
    dataset = data.from_directory(str(tmp_path), image_size=16, batch_size=6, augment="cifar", seed=0)
    x, y = first_batch(dataset)
    assert dataset.class_names == ["cat", "dog"]
    assert x.shape == (6, 16, 16, 3) and sorted(y) == [0, 0, 0, 1, 1, 1]
    assert x.max() <= 1.0


def test_the_pipeline_decodes_caches_shuffles_batches_augments_then_prefetches():
    node, chain = data.load("digits", batch_size=32, augment="mnist", seed=0), []
    while node is not None:  # From the last transformation back to the source.
        chain.append(type(node).__name__.strip("_"))
        node = getattr(node, "_input_dataset", None)
    stages = [name for name in chain if name != "OptionsDataset"][::-1]
    assert stages == [
        "TensorSliceDataset", "ParallelMapDataset",  # source, decode + resize
        "CacheDataset", "ShuffleDataset", "ParallelBatchDataset",
        "ParallelMapDataset",  # batch-level augmentation
        "PrefetchDataset",
    ]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: data.load("digits", augment="cutout"), r"augment='cutout' is not a preset; choose one of \['cifar', 'imagenet', 'mnist'\]"),
        (lambda: data.load("digits", split="validation"), r"split='validation': the digits dataset has 'train', 'test', 'all'"),
        (lambda: data.load("digits", batch_size=0), r"batch_size=0 must be a positive integer"),
        (lambda: data.from_arrays(np.zeros((3, 8, 8)), np.zeros(2)), r"labels has 2 labels for 3 images; give one label per image"),
        (lambda: augment.cifar(mixup_alpha=0.2, cutmix_alpha=1.0), r"Choose MixUp or CutMix, not both"),
    ],
)
def test_bad_data_arguments_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_preview_writes_a_png_grid(tmp_path):
    path = augment.preview(data.load("digits", batch_size=16, augment="mnist"), str(tmp_path / "grid.png"),
                           rows=2, columns=4)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # No temporary file left.


def test_random_resized_crop_outputs_the_requested_size():
    layer = augment.RandomResizedCrop(24, seed=0)
    out = layer(tf.random.uniform((5, 40, 50, 3)), training=True)
    assert out.shape == (5, 24, 24, 3)


def test_random_affine_at_zero_strength_is_the_identity():
    images = tf.random.uniform((4, 16, 20, 1))
    out = augment.RandomAffine(rotation=0.0, translation=0.0, zoom=0.0, seed=0)(images, training=True)
    np.testing.assert_allclose(out.numpy(), images.numpy(), atol=1e-6)


def test_random_affine_shifts_stay_within_the_translation_bound():
    images = np.zeros((64, 32, 32, 1), "float32")
    images[:, 14:18, 14:18] = 1.0
    out = augment.RandomAffine(translation=0.1, seed=1)(tf.constant(images), training=True).numpy()
    centres = np.array([np.argwhere(image[..., 0] > 0.25).mean(axis=0) for image in out])
    assert np.abs(centres - 15.5).max() <= 0.1 * 32 + 0.5
    assert centres.std(axis=0).min() > 0.5  # Each image moved on its own.


def test_color_jitter_keeps_range_and_gray_stays_gray():
    gray = tf.repeat(tf.random.uniform((8, 10, 10, 1)), 3, axis=-1)
    out = augment.ColorJitter(0.4, 0.4, 0.4, seed=0)(gray, training=True).numpy()
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)  # Saturation of gray is a no-op.
    assert not np.allclose(out, gray.numpy())


def test_color_jitter_blend_equals_brightness_contrast_saturation_one_by_one():
    images = tf.random.uniform((6, 9, 9, 3), 0.4, 0.6, seed=1)  # Mid-range: no step clips.
    out = augment.ColorJitter(0.1, 0.1, 0.1, seed=3)(images, training=True).numpy()
    draws = tf.random.Generator.from_seed(3)  # The layer's draws, in its order.
    b, c, s = (draws.uniform((6, 1, 1, 1), 0.9, 1.1) for _ in range(3))
    step = images * b
    mean = tf.reduce_mean(tf.image.rgb_to_grayscale(step), axis=[1, 2, 3], keepdims=True)
    step = mean + c * (step - mean)
    gray = tf.image.rgb_to_grayscale(step)
    step = gray + s * (step - gray)
    np.testing.assert_allclose(out, step.numpy(), atol=1e-5)


def test_random_resized_crop_flip_mirrors_some_crops_for_free():
    ramp = tf.tile(tf.linspace(0.0, 1.0, 32)[None, None, :, None], (16, 32, 1, 1))
    crops = augment.RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True, seed=0)(ramp).numpy()
    rising = crops[:, 8, -1, 0] > crops[:, 8, 0, 0]
    assert 0 < rising.sum() < 16  # Some crops kept the left-to-right ramp, some were mirrored.


def test_augmentation_runs_one_batch_at_a_time_on_a_cpu_only_machine():
    from kzoo.data.datasets import _augment_parallelism

    assert _augment_parallelism(None, seed=None) is False  # This machine has no GPU or TPU.
    assert _augment_parallelism(True, seed=None) is True
    assert _augment_parallelism(True, seed=0) is False  # A seed needs one stream.


def image_hashes(dataset):
    """{hash of the decoded image bytes: label} of every image in a dataset (images are distinct)."""
    found = {}
    for images, labels in dataset:
        for image, label in zip(np.asarray(images), np.asarray(labels)):
            found[hash(np.round(image * 255).astype(np.uint8).tobytes())] = int(label)
    return found


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """Three classes of 20, 13 and 7 distinct 16x16 PNGs (the first pixel row counts the image)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("classes")
    rng = np.random.RandomState(0)
    count = 0
    for name, size in (("ant", 20), ("bee", 13), ("cat", 7)):
        (root / name).mkdir()
        for index in range(size):
            pixels = rng.randint(0, 256, (16, 16, 3), dtype=np.uint8)
            pixels[0, 0] = count % 256, count // 256, 7
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")
            count += 1
    return str(root)


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("shuffle_training, shuffle_held_out, batch_size",
                         [(True, False, 4), (False, True, 32), (True, True, 5), (False, False, 8)])
def test_directory_subsets_never_share_an_image_cover_the_folder_and_keep_class_proportions(
        class_folder, seed, shuffle_training, shuffle_held_out, batch_size):
    def subset(name, shuffle):
        return image_hashes(data.from_directory(class_folder, image_size=16, batch_size=batch_size, seed=seed,
                                                shuffle=shuffle, validation_split=0.2, test_split=0.1, subset=name))

    everything = image_hashes(data.from_directory(class_folder, image_size=16, shuffle=False))
    training = subset("training", shuffle_training)
    validation, test = subset("validation", shuffle_held_out), subset("test", shuffle_held_out)
    assert len(everything) == 40
    assert not set(training) & set(validation) and not set(training) & set(test) and not set(validation) & set(test)
    assert {**training, **validation, **test} == everything  # The whole folder, with the right labels.
    for held_out, fraction in ((validation, 0.2), (test, 0.1)):
        counts = np.bincount(list(held_out.values()), minlength=3)
        assert counts.tolist() == [max(1, round(size * fraction)) for size in (20, 13, 7)]  # Stratified.


def test_directory_split_depends_on_the_seed_only(class_folder):
    def validation(seed, **kwargs):
        return set(image_hashes(data.from_directory(class_folder, image_size=16, validation_split=0.25,
                                                    subset="validation", seed=seed, **kwargs)))

    assert validation(3, shuffle=False, batch_size=2) == validation(3, shuffle=True, batch_size=64)
    assert validation(3) != validation(4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(validation_split=0.2), r"subset=None: with these splits give subset= one of \['training', 'validation'\]"),
    (dict(subset="validation"), r"subset='validation' needs validation_split="),
    (dict(validation_split=1.5, subset="training"), r"validation_split=1.5 must be a fraction between 0 and 1"),
    (dict(validation_split=0.6, test_split=0.5, subset="test"), r"validation_split \+ test_split = 1.1 leaves nothing"),
    (dict(validation_split=0.5, test_split=0.4, subset="test"), r"class 'cat' has 7 image\(s\), too few"),
])
def test_directory_split_errors_say_what_to_pass(class_folder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.from_directory(class_folder, image_size=16, **kwargs)


def test_a_folder_without_class_folders_of_images_is_refused(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="has no images in sub-folders"):
        data.from_directory(str(tmp_path))


def test_digits_slices_are_disjoint_and_cover_their_split():
    def labels_and_images(split):
        images, labels = first_batch(data.load("digits", split, batch_size=2000, shuffle=False))
        return images, labels

    whole, head, tail = (labels_and_images(split) for split in ("train", "train[:90%]", "train[90%:]"))
    assert len(head[1]) == 1293 and len(tail[1]) == 144
    np.testing.assert_array_equal(np.concatenate([head[0], tail[0]]), whole[0])
    np.testing.assert_array_equal(labels_and_images("test[10:20]")[0], labels_and_images("test")[0][10:20])


def test_tfds_split_slices_are_disjoint_whatever_the_shuffling(tmp_path):
    import tensorflow_datasets as tfds

    class KzooDistinctDigits(tfds.testing.DummyMnist, skip_registration=True):
        """50 distinct images per split (DummyMnist's are all alike), in supervised form."""

        def _info(self):
            features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(28, 28, 1)),
                                                   "label": tfds.features.ClassLabel(num_classes=10)})
            return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

        def _generate_examples(self):
            for index in range(50):
                yield index, {"image": np.full((28, 28, 1), index, np.uint8), "label": index % 10}

    builder = KzooDistinctDigits(data_dir=str(tmp_path))
    builder.download_and_prepare()
    original = data.datasets._tfds_split

    def read(name, split, data_dir, download, shuffle_files):  # data.load's reader, on this builder.
        return builder.as_dataset(split=split, as_supervised=True, shuffle_files=shuffle_files), builder

    data.datasets._tfds_split = read
    try:
        parts = [image_hashes(data.load("any", split, batch_size=7, seed=seed, shuffle=shuffle))
                 for split, seed, shuffle in (("train[:80%]", None, True), ("train[80%:90%]", 1, False),
                                              ("train[90%:]", None, True))]
    finally:
        data.datasets._tfds_split = original
    assert [len(part) for part in parts] == [40, 5, 5]
    assert len({**parts[0], **parts[1], **parts[2]}) == 50


@pytest.mark.parametrize("images, labels, kwargs, message", [
    (np.full((4, 8, 8), 300.0), [0, 1, 2, 3], {}, r"images has float values from 300 to 300, outside \[0, 1\].*divide 0-255 floats by 255"),
    (np.full((4, 8, 8), -0.5), [0, 1, 2, 3], {}, r"from -0.5 to -0.5.*Normalised images"),
    (np.full((4, 8, 8), np.nan), [0, 1, 2, 3], {}, r"images contains NaN or infinite values"),
    (np.full((4, 8, 8), 1.5), [0, 1, 2, 3], {}, r"images has float values from 1.5 to 1.5"),
    (np.full((4, 8, 8), 1000, np.int32), [0, 1, 2, 3], {}, r"integers from 1000 to 1000, outside 0-255"),
    (np.zeros((0, 8, 8)), [], {}, r"images is empty"),
    (np.zeros((4, 3, 8, 8)), [0, 1, 2, 3], {}, r"look channels-first.*np.transpose"),
    (np.zeros((4, 8, 8)), [0, 1, -1, 3], {}, r"labels has a negative class id \(-1\)"),
    (np.zeros((4, 8, 8)), [0, 1, 2.5, 3], {}, r"labels has values that are not integers \(e.g. 2.5\)"),
    (np.zeros((4, 8, 8)), [0, 1, 2, 3], dict(num_classes=3), r"class id 3, but there are num_classes=3"),
    (np.zeros((4, 8, 8)), np.eye(4), {}, r"labels has shape \(4, 4\).*labels.argmax\(axis=1\)"),
    (np.zeros((4, 8, 8)), [0, 1, 2], {}, r"labels has 3 labels for 4 images"),
])
def test_from_arrays_refuses_what_it_would_otherwise_train_on_silently(images, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.from_arrays(images, np.asarray(labels), **kwargs)


def test_float_pixels_in_0_255_are_read_as_such_with_one_logged_line(caplog):
    pixels = np.random.RandomState(0).randint(0, 256, (20, 8, 8, 1)).astype("uint8")
    with caplog.at_level("WARNING", logger="kzoo"):
        as_float = all_images(data.from_arrays(pixels.astype("float32"), np.arange(20) % 2, shuffle=False))
    assert [record.getMessage() for record in caplog.records] == [
        "images: float pixels from 0 to 255 read as 0-255 and scaled by 1/255 to kzoo's [0, 1]."]
    np.testing.assert_array_equal(as_float, all_images(data.from_arrays(pixels, np.arange(20) % 2, shuffle=False)))
    assert 0.0 <= as_float.min() and as_float.max() == 1.0


def test_a_pipeline_stops_at_a_bad_image_or_label_with_a_message_that_says_so():
    def first(images, labels, **kwargs):
        return next(iter(data.pipeline(tf.data.Dataset.from_tensor_slices((images, labels)), batch_size=4,
                                      shuffle=False, **kwargs)))

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"kzoo: a float image in the dataset is outside \[0, 1\]"):
        first(np.full((4, 8, 8, 1), 255.0, "float32"), np.zeros(4, "int32"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"kzoo: a label in the dataset is outside 0 to 2"):
        first(np.zeros((4, 8, 8, 1), "float32"), np.array([0, 1, 2, 3]), num_classes=3)
    images, labels = first(np.zeros((4, 8, 8, 1), "uint8"), np.array([0, 1, 2, 2]), num_classes=3)
    assert images.dtype == tf.float32 and labels.numpy().tolist() == [0, 1, 2, 2]


def test_array_batches_check_scale_and_reshuffle_arrays_the_same_way_for_the_same_seed():
    from kzoo.data.arrays import ArrayBatches

    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8)).astype("uint8")
    labels = np.arange(10) % 3
    first, second = (ArrayBatches(images, labels, batch_size=4, seed=7) for _ in range(2))
    assert len(first) == 3 and first[2][0].shape == (2, 8, 8, 1)
    batch, batch_labels = first[0]
    assert batch.dtype == np.float32 and batch.max() <= 1.0 and batch_labels.dtype == np.int32
    order = np.concatenate([first[i][1] for i in range(3)])
    np.testing.assert_array_equal(order, np.concatenate([second[i][1] for i in range(3)]))
    assert sorted(order) == sorted(labels)  # Every example once per epoch.
    row = np.flatnonzero((images[..., None].astype("float32") / 255.0 == batch[0]).all(axis=(1, 2, 3)))
    assert labels[row[0]] == batch_labels[0]  # Images and labels stay together.
    first.on_epoch_end()
    assert not np.array_equal(np.concatenate([first[i][1] for i in range(3)]), order)
    one_hot = first.with_one_hot()[0][1]
    np.testing.assert_array_equal(one_hot.argmax(axis=1), first[0][1])
    assert one_hot.shape == (4, 3)
    with pytest.raises(ValueError, match="class id 2, but there are num_classes=2"):
        ArrayBatches(images, labels, num_classes=2)
    with pytest.raises(ValueError, match="channels-first"):
        ArrayBatches(np.zeros((4, 3, 32, 32), "float32"), np.zeros(4))
