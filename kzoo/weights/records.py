"""Weights records: which pretrained weights exist for which model, where they come from, how they were trained.

Data only (no Keras): the catalog, `kzoo list` and `kzoo info` read it. One
record per (model, tag): the files with and without the classifier, their
format and source, the preprocessing the weights expect (`PREPROCESSING`,
the one table `preprocess_input` and `transfer` apply) and the published
accuracy. A converter (torchvision, timm) adds records whose `format` names
its checkpoint reader.
"""

from __future__ import annotations

from dataclasses import dataclass

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
_ACCURACY_SOURCE = "https://keras.io/api/applications/ (single 224x224 centre crop)"
_TORCHVISION_BASE = "https://download.pytorch.org/models/"
_TORCHVISION_ACCURACY = ("https://pytorch.org/vision/stable/models.html (IMAGENET1K_V1: resize 256, "
                         "centre crop 224, bilinear)")
_TORCHVISION_LICENCE = "BSD-3-Clause (torchvision); trained on ImageNet, whose terms allow non-commercial research"


@dataclass(frozen=True)
class Preprocessing:
    """What a set of weights expects of RGB 0-255 images: `(x[..., order] - mean) / std` per channel.

    Attributes:
        order: Input channel feeding each output channel ((2, 1, 0): RGB -> BGR).
        mean: Subtracted per output channel, in 0-255 units.
        std: Divided by per output channel, in 0-255 units.
    """

    order: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# keras.applications.imagenet_utils.preprocess_input's three modes.
PREPROCESSING = {
    "caffe": Preprocessing((2, 1, 0), (103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),  # BGR, mean-subtracted.
    "tf": Preprocessing((0, 1, 2), (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),  # [-1, 1].
    "torch": Preprocessing((0, 1, 2), (0.485 * 255, 0.456 * 255, 0.406 * 255),
                           (0.229 * 255, 0.224 * 255, 0.225 * 255)),  # ImageNet mean and std.
}


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable file: where it lives, its cache name and its published hash.

    Attributes:
        url: Where it is downloaded from.
        file_name: Its name in the Keras cache (`$KERAS_HOME/models`).
        file_hash: The full hash its publisher gives (md5 for keras.applications'
            files), checked by `keras.utils.get_file`; None where none is published.
        sha256: Its sha256 or the prefix its publisher gives (torchvision's
            file names carry the first 8 hex digits), checked after download.
    """

    url: str
    file_name: str
    file_hash: str | None
    sha256: str | None = None


@dataclass(frozen=True)
class WeightsRecord:
    """A set of pretrained weights for one model, under one tag.

    Attributes:
        model: Registered model name.
        tag: The `weights=` value that selects it, e.g. "imagenet".
        top: The file with the classifier (`include_top=True`).
        no_top: The file without it (`include_top=False`), if published.
        preprocessing: The `keras.applications.imagenet_utils.preprocess_input`
            mode the weights were trained with: "caffe", "tf" or "torch".
        input_size: Training and evaluation resolution.
        categories: Name of the label set, a key of `CATEGORIES`.
        top1: Published ImageNet top-1 accuracy, percent.
        top5: Published ImageNet top-5 accuracy, percent.
        accuracy_source: Where the accuracy figures come from.
        source: Who published the weights ("keras.applications", or the
            converted checkpoint's origin, e.g. "torchvision").
        format: How the files are read: "keras-h5" (keras.applications'
            legacy HDF5, loaded as it is), "torch" (a PyTorch state dict) or
            "safetensors"; both of these are converted by `kzoo.convert` once
            and cached as `.weights.h5` beside the download.
        licence: The weights' licence, as their publisher states it.
    """

    model: str
    tag: str
    top: WeightsFile
    no_top: WeightsFile | None
    preprocessing: str
    input_size: int
    categories: str
    top1: float | None
    top5: float | None
    accuracy_source: str = _ACCURACY_SOURCE
    source: str = "keras.applications"
    format: str = "keras-h5"
    licence: str = "as keras.applications publishes them (the original authors' release)"

    def file(self, include_top: bool) -> WeightsFile:
        """The file for `include_top`; raises ValueError if not published."""
        chosen = self.top if include_top else self.no_top
        if chosen is None:
            raise ValueError(
                f"{self.model} has no {self.tag!r} weights without the classifier; "
                "use include_top=True."
            )
        return chosen


def _keras_application(model, folder, stem, top_hash, no_top_hash, mode, top1, top5):
    def file(suffix, file_hash):
        name = f"{stem}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
        return WeightsFile(f"{_KERAS_BASE}{folder}/{name}", name, file_hash)

    return WeightsRecord(
        model=model,
        tag="imagenet",
        top=file("", top_hash),
        no_top=file("_notop", no_top_hash),
        preprocessing=mode,
        input_size=224,
        categories="imagenet1k",
        top1=top1,
        top5=top5,
    )


def _torchvision(model, file_name, top1, top5, preprocessing="torch"):
    """torchvision's IMAGENET1K_V1 weights: one checkpoint serves with and without the classifier."""
    file = WeightsFile(f"{_TORCHVISION_BASE}{file_name}", file_name, None, sha256=file_name.rsplit("-", 1)[1][:-4])
    return WeightsRecord(
        model=model, tag="imagenet", top=file, no_top=file, preprocessing=preprocessing, input_size=224,
        categories="imagenet1k", top1=top1, top5=top5, accuracy_source=_TORCHVISION_ACCURACY,
        source="torchvision", format="torch", licence=_TORCHVISION_LICENCE,
    )


def _timm(model, hub_name, top1, top5):
    """A timm checkpoint on the Hugging Face Hub (safetensors)."""
    file = WeightsFile(f"https://huggingface.co/timm/{hub_name}/resolve/main/model.safetensors",
                       f"{hub_name}.safetensors", None)
    return WeightsRecord(
        model=model, tag="imagenet", top=file, no_top=file, preprocessing="torch", input_size=224,
        categories="imagenet1k", top1=top1, top5=top5,
        accuracy_source=f"https://huggingface.co/timm/{hub_name} (model card, 224x224; 288x288 scores higher)",
        source=f"timm ({hub_name})", format="safetensors", licence="Apache-2.0 (timm)",
    )


# The official keras.applications files (keras/src/applications/{vgg16,vgg19,resnet}.py), then the models whose
# only published ImageNet weights are torchvision's or timm's, converted on first use.
RECORDS: dict[tuple[str, str], WeightsRecord] = {
    (r.model, r.tag): r
    for r in [
        _keras_application("vgg16", "vgg16", "vgg16", "64373286793e3c8b2b4e3219cbf3544b",
                           "6d6bbae143d832006294945121d1f1fc", "caffe", 71.3, 90.1),
        _keras_application("vgg19", "vgg19", "vgg19", "cbe5617147190e668d6c5d5026f83318",
                           "253f8cb515780f3b799900260a226db6", "caffe", 71.3, 90.0),
        _keras_application("resnet50", "resnet", "resnet50", "2cb95161c43110f7111970584f804107",
                           "4d473c1dd8becc155b73f8504c6f6626", "caffe", 74.9, 92.1),
        _keras_application("resnet101", "resnet", "resnet101", "f1aeb4b969a6efcfb50fad2f0c20cfc5",
                           "88cf7a10940856eca736dc7b7e228a21", "caffe", 76.4, 92.8),
        _keras_application("resnet152", "resnet", "resnet152", "100835be76be38e30d865e96f2aaae62",
                           "ee4c566cf9a93f14d82f913c2dc6dd0c", "caffe", 76.6, 93.1),
        _keras_application("resnet50_v2", "resnet", "resnet50v2", "3ef43a0b657b3be2300d5770ece849e0",
                           "fac2f116257151a9d068a22e544a4917", "tf", 76.0, 93.0),
        _keras_application("resnet101_v2", "resnet", "resnet101v2", "6343647c601c52e1368623803854d971",
                           "c0ed64b8031c3730f411d2eb4eea35b5", "tf", 77.2, 93.8),
        _keras_application("resnet152_v2", "resnet", "resnet152v2", "a49b44d1979771252814e80f8ec446f9",
                           "ed17cf2e0169df9d443503ef94b23b33", "tf", 78.0, 94.2),
        _torchvision("alexnet", "alexnet-owt-7be5be79.pth", 56.522, 79.066),
        _torchvision("vgg11", "vgg11-8a719046.pth", 69.020, 88.628),
        _torchvision("vgg13", "vgg13-19584684.pth", 69.928, 89.246),
        _torchvision("vgg11_bn", "vgg11_bn-6002323d.pth", 70.370, 89.810),
        _torchvision("vgg13_bn", "vgg13_bn-abd245e5.pth", 71.586, 90.374),
        _torchvision("vgg16_bn", "vgg16_bn-6c64b313.pth", 73.360, 91.516),
        _torchvision("vgg19_bn", "vgg19_bn-c79401a0.pth", 74.218, 91.842),
        _torchvision("resnet18", "resnet18-f37072fd.pth", 69.758, 89.078),
        _torchvision("resnet34", "resnet34-b627a593.pth", 73.314, 91.420),
        _torchvision("resnet50_tv", "resnet50-0676ba61.pth", 76.130, 92.862),
        _torchvision("resnet101_tv", "resnet101-63fe2227.pth", 77.374, 93.546),
        # torchvision's GoogLeNet weights come with transform_input: the network sees 2x - 1, the "tf" mode.
        _torchvision("googlenet", "googlenet-1378be20.pth", 69.778, 89.530, preprocessing="tf"),
        _torchvision("wide_resnet50_2", "wide_resnet50_2-95faca4d.pth", 78.468, 94.086),
        _torchvision("wide_resnet101_2", "wide_resnet101_2-32ee1156.pth", 78.848, 94.284),
        _timm("seresnet50", "seresnet50.ra2_in1k", 80.26, 95.08),
    ]
}

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
_TORCHVISION_SEGMENTATION_ACCURACY = ("https://pytorch.org/vision/stable/models.html#semantic-segmentation (COCO "
                                      "val2017 subset with the 20 VOC categories, resized to 520)")


@dataclass(frozen=True)
class SegmentationRecord:
    """Pretrained weights of a whole segmentation model (`kzoo.segment.build(backbone, head=head, weights=tag)`).

    Attributes:
        backbone, head, tag: What selects it.
        file: The checkpoint (converted by `kzoo.convert` once, then cached).
        class_names: The label set, in id order (so `num_classes` is its length).
        output_stride: The backbone's output stride the weights were trained at.
        preprocessing: As `WeightsRecord.preprocessing`.
        mean_iou, pixel_accuracy: Published figures, percent.
        accuracy_source, source, format, licence: As in `WeightsRecord`.
    """

    backbone: str
    head: str
    tag: str
    file: WeightsFile
    class_names: tuple[str, ...]
    output_stride: int
    preprocessing: str
    mean_iou: float
    pixel_accuracy: float
    accuracy_source: str = _TORCHVISION_SEGMENTATION_ACCURACY
    source: str = "torchvision"
    format: str = "torch"
    licence: str = "BSD-3-Clause (torchvision); trained on COCO (CC BY 4.0 annotations)"


def _torchvision_segmentation(backbone, head, file_name, mean_iou, pixel_accuracy):
    file = WeightsFile(f"{_TORCHVISION_BASE}{file_name}", file_name, None, sha256=file_name.rsplit("-", 1)[1][:-4])
    return SegmentationRecord(backbone, head, "coco_voc", file, VOC_CLASSES, output_stride=8, preprocessing="torch",
                              mean_iou=mean_iou, pixel_accuracy=pixel_accuracy)


# torchvision's COCO_WITH_VOC_LABELS_V1 weights (torchvision/models/segmentation/{fcn,deeplabv3}.py): ResNet v1.5
# backbones dilated to output stride 8, torchvision's FCNHead ("fcn") or DeepLabHead (ASPP at rates 12/24/36).
SEGMENTATION_RECORDS: dict[tuple[str, str, str], SegmentationRecord] = {
    (r.backbone, r.head, r.tag): r
    for r in [
        _torchvision_segmentation("resnet50_tv", "fcn", "fcn_resnet50_coco-1167a1af.pth", 60.5, 91.4),
        _torchvision_segmentation("resnet101_tv", "fcn", "fcn_resnet101_coco-7ecb50ca.pth", 63.7, 91.9),
        _torchvision_segmentation("resnet50_tv", "deeplabv3", "deeplabv3_resnet50_coco-cd0a2569.pth", 66.4, 92.4),
        _torchvision_segmentation("resnet101_tv", "deeplabv3", "deeplabv3_resnet101_coco-586e9e4e.pth", 67.4, 92.4),
    ]
}

# Label sets: the class index keras.applications' decode_predictions uses.
CATEGORIES: dict[str, WeightsFile] = {
    "imagenet1k": WeightsFile(
        "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json",
        "imagenet_class_index.json",
        "c2c37ea517e94d9795004a39431a14cb",
    )
}


def available_weights(model_name: str) -> list[str]:
    """The weight tags published for a model (an empty list if none), the default first."""
    return [tag for (model, tag) in RECORDS if model == model_name]


def default_tag(model_name: str) -> str | None:
    """The tag `weights="default"` selects: the model's first (best) published weights, or None."""
    tags = available_weights(model_name)
    return tags[0] if tags else None


def get_record(model_name: str, tag: str = "imagenet") -> WeightsRecord:
    """The weights record of `(model_name, tag)`.

    Raises:
        ValueError: If there is none; the message lists the available tags.
    """
    record = RECORDS.get((model_name, tag))
    if record is None:
        tags = available_weights(model_name)
        with_weights = sorted({model for model, _ in RECORDS})
        choices = (
            f"Available for {model_name}: {', '.join(map(repr, tags))}."
            if tags
            else f"{model_name} has no pretrained weights; models that have: "
            f"{', '.join(with_weights)}."
        )
        raise ValueError(
            f"Unknown weights {tag!r} for {model_name}. {choices} Or pass weights=None "
            "(random initialisation) or the path to a weights file."
        )
    return record


