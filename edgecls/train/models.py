"""Model registry: one decorator, one table. Every model takes RGB pixels in [0, 255] and
normalises inside itself, so the exported artifacts take raw camera pixels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgecls.errors import EdgeclsError


@dataclass(frozen=True)
class ModelConfig:
    name: str = "seed-cnn"
    img_size: tuple[int, int] = (96, 96)
    alpha: float = 1.0  # MobileNet width multiplier
    weights: str = "imagenet"  # imagenet | none | PATH (backbones only)
    fine_tune: int = 0  # unfreeze the top N backbone layers
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


MODELS: dict[str, Callable] = {}


def register_model(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn

    return deco


def build_model(config: ModelConfig, num_classes: int):
    if config.name not in MODELS:
        raise EdgeclsError(
            f"--model {config.name!r} is not known: choose one of {', '.join(MODELS)}"
        )
    return MODELS[config.name](config, num_classes)


@register_model("seed-cnn")
def seed_cnn(config: ModelConfig, num_classes: int):
    """The seeds' network (TensorFlow's image classification tutorial), softmax on top."""
    import keras
    from keras import layers

    h, w = config.img_size
    return keras.Sequential(
        [
            keras.Input((h, w, 3)),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="seed_cnn",
    )


def _weights(config: ModelConfig) -> str | None:
    w = config.weights
    if w.lower() == "none":
        return None
    if w.lower() == "imagenet":
        return "imagenet"
    if not Path(w).is_file():
        raise EdgeclsError(f"--weights {w}: file not found (use imagenet, none or a weights file)")
    return w


def _backbone_classifier(config, num_classes, make_backbone, preprocess):
    import keras
    from keras import layers

    h, w = config.img_size
    weights = _weights(config)
    try:
        backbone = make_backbone(
            input_shape=(h, w, 3),
            include_top=False,
            weights=weights,
            alpha=config.alpha,
            pooling="avg",
        )
    except Exception as exc:
        if weights == "imagenet" and (
            "fetch" in str(exc).lower() or "url" in str(exc).lower() or isinstance(exc, OSError)
        ):
            raise EdgeclsError(
                f"could not download ImageNet weights for {config.name} (no network?): "
                "use --weights none, or --weights PATH to a local weights file"
            ) from None
        raise EdgeclsError(f"{config.name}: cannot build backbone ({exc})") from None
    backbone.trainable = config.fine_tune > 0
    if config.fine_tune > 0:
        for layer in backbone.layers[: -config.fine_tune]:
            layer.trainable = False
    inputs = keras.Input((h, w, 3))
    x = backbone(preprocess(inputs), training=False)  # BatchNorm stays in inference mode
    x = layers.Dropout(config.dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=config.name.replace("-", "_"))


@register_model("mobilenet-v2")
def mobilenet_v2(config: ModelConfig, num_classes: int):
    import keras

    return _backbone_classifier(
        config,
        num_classes,
        keras.applications.MobileNetV2,
        keras.layers.Rescaling(1.0 / 127.5, offset=-1.0),  # MobileNetV2 wants [-1, 1]
    )


@register_model("mobilenet-v3-small")
def mobilenet_v3_small(config: ModelConfig, num_classes: int):
    import keras

    def make(**kw):  # MobileNetV3 carries its own Rescaling: it takes [0, 255] as is
        return keras.applications.MobileNetV3Small(include_preprocessing=True, **kw)

    return _backbone_classifier(config, num_classes, make, lambda x: x)


def augmentation(seed: int):
    """Flip, rotation, zoom and contrast, as in seeds 003/004; applied in the input pipeline so
    the exported model holds none of it."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.1, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
            layers.RandomContrast(0.2, seed=seed + 3),
        ],
        name="augmentation",
    )
