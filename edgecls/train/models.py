"""Model registry: one table of builders, each with the recipe (epochs, lr, patience) that makes
it converge on a few hundred photos per class. Every model takes RGB pixels in [0, 255] and
normalises inside itself, so the exported artifacts take raw camera pixels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgecls.errors import EdgeclsError
from edgecls.registry import Registry


@dataclass(frozen=True)
class ModelConfig:
    name: str = "seed-cnn"
    img_size: tuple[int, int] = (96, 96)
    alpha: float = 1.0  # MobileNet width multiplier
    weights: str = "imagenet"  # imagenet | none | PATH (backbones only)
    fine_tune: int = 0  # pretrained backbones: unfreeze the top N layers (>= depth: all)
    dropout: float = 0.2

    @property
    def scratch(self) -> bool:
        """No pretrained weights: the whole network learns, BatchNorm in training mode."""
        return self.weights.lower() == "none"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recipe:
    """Defaults measured to converge on the embedded samples across seeds; options override."""

    epochs: int = 10
    lr: float = 1e-3
    patience: int = 5
    # Early stopping and the best weights follow this. A BatchNorm network learning on a small
    # set (from scratch, or a full fine-tune) has a noisy val_loss whose minimum is often the
    # first epoch (near-uniform answers): accuracy picks the epoch that classifies best.
    monitor: str = "val_loss"


@dataclass(frozen=True)
class ModelEntry:
    build: Callable  # (ModelConfig, num_classes) -> keras.Model
    scratch: Recipe  # trained from random weights
    pretrained: Recipe | None = None  # backbones with ImageNet or file weights

    def recipe(self, config: ModelConfig) -> Recipe:
        return self.pretrained if self.pretrained and not config.scratch else self.scratch


MODELS: Registry[ModelEntry] = Registry("--model")


def entry(scratch: Recipe, pretrained: Recipe | None = None):
    """`make` for `MODELS.register`: the decorated builder plus its recipes."""
    return lambda build: ModelEntry(build, scratch, pretrained)


def build_model(config: ModelConfig, num_classes: int):
    return MODELS.get(config.name).build(config, num_classes)


def recipe_for(config: ModelConfig) -> Recipe:
    return MODELS.get(config.name).recipe(config)


@MODELS.register("seed-cnn", make=entry(Recipe(epochs=10, lr=1e-3, patience=5)))
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
            layers.Dense(num_classes, activation="softmax", dtype="float32"),
        ],
        name="seed_cnn",
    )


def check_weights(config: ModelConfig) -> str | None:
    """What the Keras constructor gets: a file is loaded afterwards, into the backbone alone."""
    w = config.weights
    if w.lower() in ("none", "imagenet"):
        return None if w.lower() == "none" else "imagenet"
    if not Path(w).is_file():
        raise EdgeclsError(f"--weights {w}: file not found (use imagenet, none or a weights file)")
    return None


def _make_backbone(config: ModelConfig, make_backbone):
    h, w = config.img_size
    weights = check_weights(config)
    try:
        backbone = make_backbone(
            input_shape=(h, w, 3), include_top=False, weights=weights, alpha=config.alpha
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
    if weights is None and not config.scratch:
        _load_backbone_weights(backbone, Path(config.weights))
    return backbone


def _load_backbone_weights(backbone, path: Path) -> None:
    """A `.weights.h5` saved by `--save-backbone` or Keras, or a whole `.keras`/`.h5` model."""
    try:
        backbone.load_weights(path)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise EdgeclsError(
            f"--weights {path}: not weights for this backbone ({first}); pass a file saved by "
            "`edgecls train --save-backbone` with the same --model, --alpha and --img-size"
        ) from None


def _backbone_classifier(config: ModelConfig, num_classes: int, make_backbone, preprocess):
    """Scratch, or pretrained with every layer unfrozen (`fine_tune` >= depth): everything
    trains and BatchNorm learns the new data's statistics. Otherwise the backbone is frozen
    (top `fine_tune` layers excepted) and its BatchNorm stays in inference mode."""
    import keras
    from keras import layers

    backbone = _make_backbone(config, make_backbone)
    backbone.name = "backbone"
    whole = config.scratch or config.fine_tune >= len(backbone.layers)
    if whole:
        backbone.trainable = True
        for layer in backbone.layers:  # 0.999 needs thousands of steps before val means anything
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
    else:
        backbone.trainable = config.fine_tune > 0
        for layer in backbone.layers[: max(0, len(backbone.layers) - config.fine_tune)]:
            layer.trainable = False
    h, w = config.img_size
    inputs = keras.Input((h, w, 3))
    x = backbone(preprocess(inputs), training=None if whole else False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(config.dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=config.name.replace("-", "_"))


BACKBONE_SCRATCH = Recipe(epochs=30, lr=2e-3, patience=8, monitor="val_accuracy")
BACKBONE_PRETRAINED = Recipe(epochs=10, lr=1e-3, patience=5, monitor="val_accuracy")


@MODELS.register("mobilenet-v2", make=entry(BACKBONE_SCRATCH, BACKBONE_PRETRAINED))
def mobilenet_v2(config: ModelConfig, num_classes: int):
    import keras

    return _backbone_classifier(
        config,
        num_classes,
        keras.applications.MobileNetV2,
        keras.layers.Rescaling(1.0 / 127.5, offset=-1.0),  # MobileNetV2 wants [-1, 1]
    )


@MODELS.register("mobilenet-v3-small", make=entry(BACKBONE_SCRATCH, BACKBONE_PRETRAINED))
def mobilenet_v3_small(config: ModelConfig, num_classes: int):
    import keras

    def make(**kw):  # MobileNetV3 carries its own Rescaling: it takes [0, 255] as is
        return keras.applications.MobileNetV3Small(include_preprocessing=True, **kw)

    return _backbone_classifier(config, num_classes, make, lambda x: x)


def make_backbone(config: ModelConfig):
    """The MobileNetV2 backbone alone (no top) with `config.weights` (imagenet, none, a file):
    what the anomaly statistics path takes its features from."""
    import keras

    return _make_backbone(config, keras.applications.MobileNetV2)


def backbone_of(model):
    """The backbone sub-model of a classifier built here, or None (seed-cnn has none)."""
    try:
        return model.get_layer("backbone")
    except ValueError:
        return None


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
