"""Attribution methods, looked up by name (`--method`): each gives (N, K, H, W) attributions
for the K classes asked per image."""

from __future__ import annotations

import numpy as np

from edgecls.registry import Registry

EXPLAINERS = Registry("--method")


@EXPLAINERS.register("gradient")
def gradient_attributions(model, images, background, classes, config, progress) -> np.ndarray:
    """(N, K, H, W) attributions for the classes given per image, by expected gradients."""
    import keras
    import shap

    # SHAP calls the model with a list of inputs: give it a model that expects one
    listed = keras.Model([model.inputs[0]], model.outputs[0])
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


@EXPLAINERS.register("partition")
def partition_attributions(model, images, background, classes, config, progress) -> np.ndarray:
    """(N, K, H, W) by SHAP's Partition explainer over a blur masker: only calls the model."""
    import shap

    def predict(x):
        return np.asarray(model(np.asarray(x, np.float32), training=False))

    masker = shap.maskers.Image("blur(16,16)", images[0].shape)
    explainer = shap.Explainer(predict, masker)
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
