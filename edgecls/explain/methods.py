"""Attribution methods, looked up by name (`--method`): each gives (N, K, H, W) attributions
for the K classes asked per image. Those that only call the model (partition, kernel) explain any
artifact; gradient needs the float Keras model itself."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.explain.checks import BLUR_SIGMA
from edgecls.registry import Registry

CHUNK = 64  # images per model call: a board holds a chunk of masked images, not all of them


@dataclass(frozen=True)
class Method:
    attributions: Callable[..., np.ndarray]
    evals: int  # the default --max-evals: seconds per image on a board-class CPU
    needs_keras: bool = False  # gradients: the float Keras model and a background from its run
    check: Callable[..., None] | None = None  # refuses settings it cannot work with, up front


EXPLAINERS: Registry[Method] = Registry("--method")


def model_agnostic() -> list[str]:
    return [name for name, m in EXPLAINERS.items() if not m.needs_keras]


@EXPLAINERS.register("gradient", lambda fn: Method(fn, 500, needs_keras=True))
def gradient_attributions(model, images, background, classes, config, progress) -> np.ndarray:
    """(N, K, H, W) attributions for the classes given per image, by expected gradients."""
    import keras
    import shap

    # SHAP calls the model with a list of inputs: give it a model that expects one
    listed = keras.Model([model.keras.inputs[0]], model.keras.outputs[0])
    explainer = shap.GradientExplainer(listed, background)
    out = []
    for i, image in enumerate(images):
        values = explainer.shap_values(
            image[None], nsamples=max(50, min(config.max_evals, 1000)), rseed=config.seed
        )  # (1, H, W, C, n_classes)
        values = np.asarray(values)[0]
        out.append(np.stack([values[..., c].sum(axis=-1) for c in classes[i]]))
        progress(1)
    return np.stack(out)


@EXPLAINERS.register("partition", lambda fn: Method(fn, 500))
def partition_attributions(model, images, background, classes, config, progress) -> np.ndarray:
    """(N, K, H, W) by SHAP's Partition explainer over a blur masker: only calls the model."""
    import shap

    masker = shap.maskers.Image("blur(16,16)", images[0].shape)
    explainer = shap.Explainer(lambda x: model.predict(np.asarray(x, np.float32)), masker)
    out = []
    for i, image in enumerate(images):
        result = explainer(
            image[None],
            max_evals=max(config.max_evals, 20),
            batch_size=50,
            outputs=np.asarray(classes[i]),
            silent=True,
        )
        values = np.asarray(result.values)[0]  # (H, W, C, K)
        out.append(np.moveaxis(values.sum(axis=2), -1, 0))
        progress(1)
    return np.stack(out)


def _enough_samples(config) -> None:
    """Fewer samples than superpixels leave Kernel SHAP's regression underdetermined."""
    if config.segments < 2:
        raise EdgeclsError("--segments must be at least 2")
    if config.max_evals < 2 * config.segments:
        raise EdgeclsError(
            f"--max-evals {config.max_evals} is too few for --segments {config.segments}: "
            "Kernel SHAP needs at least twice as many samples as superpixels; raise "
            "--max-evals or lower --segments"
        )


@EXPLAINERS.register("kernel", lambda fn: Method(fn, 300, check=_enough_samples))
def kernel_attributions(model, images, background, classes, config, progress) -> np.ndarray:
    """(N, K, H, W) by Kernel SHAP over SLIC superpixels, as in the insect notebook: the
    attributions follow the object's own regions. A hidden superpixel shows the blur the
    deletion check hides pixels with; a superpixel's value is spread over its pixels, so a map
    sums to the change of the output as the other methods' maps do."""
    import shap

    out = []
    for i, image in enumerate(images):
        segments = superpixels(image, config.segments)
        n = int(segments.max()) + 1
        explainer = shap.KernelExplainer(_on_superpixels(model, image, segments), np.zeros((1, n)))
        with _seeded(config.seed):  # the same coalitions for every model: --compare's maps differ
            values = explainer.shap_values(  # by the model only, not by sampling noise
                np.ones((1, n)), nsamples=config.max_evals, l1_reg=False, silent=True
            )
        values = np.asarray(values)[0]  # (n superpixels, n classes)
        per_pixel = values / np.bincount(segments.ravel(), minlength=n)[:, None]
        out.append(np.stack([per_pixel[segments, c] for c in classes[i]]))
        progress(1)
    return np.stack(out)


def superpixels(image: np.ndarray, n: int) -> np.ndarray:
    """(H, W) SLIC labels 0..n-1 (about `n` of them) of float pixels in [0, 255]."""
    from skimage.segmentation import slic

    labels = slic(image / 255.0, n_segments=n, compactness=10, sigma=1, start_label=0)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def _on_superpixels(model, image: np.ndarray, segments: np.ndarray):
    """The model as a function of which superpixels show (1) or are blurred away (0)."""
    import cv2

    hidden = cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA)

    def predict(z: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                model.predict(np.where(z[j : j + CHUNK, segments][..., None] > 0.5, image, hidden))
                for j in range(0, len(z), CHUNK)
            ]
        )

    return predict


@contextlib.contextmanager
def _seeded(seed: int):
    """Kernel SHAP samples from numpy's global generator: seed it, and give it back as it was."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
