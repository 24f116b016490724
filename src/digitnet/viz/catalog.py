"""The names of the plots, and the check that the plotting libraries are installed.

Kept apart from the plotting code so that the command line can list the plots
(and say what is missing) without importing matplotlib.
"""

from __future__ import annotations

import importlib.util

from digitnet.errors import DigitnetError

# name: what it shows (the order is the report's)
PLOTS = {
    "curves": "training and validation loss and accuracy per iteration and epoch, and the learning rate",
    "confusion": "the confusion matrix with counts, row percentages and per-class accuracy",
    "misclassified": "the 25 most confident mistakes on the test set",
    "predictions": "test digits beside their ten probabilities and a histogram of their logits",
    "weights": "the first layer's weights as images, and every weight matrix as a heatmap",
    "distributions": "each layer's weight histogram, trained against initial",
    "gradients": "each layer's gradient norm and each hidden layer's dead units, per epoch",
    "robustness": "test accuracy under Gaussian noise, rotation and shift",
    "dataset": "examples of each class, the count per class and the average image per class",
}
NEEDS_DATA = {"confusion", "misclassified", "predictions", "robustness", "dataset"}
LIBRARIES = {"matplotlib": "matplotlib", "scipy": "scipy", "PIL": "Pillow"}


def require() -> None:
    """Raise :class:`DigitnetError` naming the plotting libraries that are not installed."""
    missing = [name for module, name in LIBRARIES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise DigitnetError(
            f"plots need {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            "installed: pip install 'digitnet[viz]'"
        )
