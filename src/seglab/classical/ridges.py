"""Ridge (tube) filters: Frangi's vesselness, thresholded, for thin elongated structures."""

from __future__ import annotations

import numpy as np
from skimage.filters import frangi

from seglab.classical import register
from seglab.classical.base import Inputs, Segmenter, choice, integer, number


@register
class Vesselness(Segmenter):
    """Frangi et al. (1998) vesselness: from the Hessian's eigenvalues at scales 1..`max_sigma`
    pixels, how much each pixel looks like the centre of a tube (a ridge, in 2D) of that width;
    the `fraction` of the ROI with the strongest response is the foreground. Use it for vessels,
    neurites, fibres or membranes: thin structures on a smoother background, which no intensity
    threshold separates. `ridges` says whether they are darker (fundus vessels, EM membranes) or
    brighter than their surroundings; fitting tries both."""

    name = "vesselness"
    params = {
        "ridges": choice("bright", "whether the structures are brighter or darker than their "
                         "surroundings", ("bright", "dark")),
        "max_sigma": integer(4, "the largest scale (Gaussian sigma, pixels): about half the "
                             "widest structure", low=1),
        "fraction": number(0.1, "the share of the ROI marked as foreground", 0.001, 0.9),
    }
    grid = {"ridges": ["bright", "dark"], "fraction": [0.06, 0.09, 0.12, 0.16, 0.2, 0.25]}
    fit_cases = 3  # a few seconds per megapixel image, for each channel and polarity
    fixed_mapping = [0, 1]  # the strong response is the foreground, dark ridges or bright

    def response(self, x: Inputs) -> np.ndarray:
        """The vesselness (0 outside the ROI, where the filter saw no rim)."""
        ridges, max_sigma = self.values["ridges"], self.values["max_sigma"]

        def vesselness() -> np.ndarray:
            filtered = frangi(x.filled, sigmas=range(1, max_sigma + 1),
                              black_ridges=ridges == "dark")
            return filtered if x.roi is None else np.where(x.roi, filtered, 0.0)

        return self.remembered(x, (ridges, max_sigma), vesselness)

    def partition(self, x: Inputs) -> np.ndarray:
        response = self.response(x)
        inside = response[x.roi] if x.roi is not None else response.ravel()
        threshold = np.quantile(inside, 1.0 - self.values["fraction"])
        return (response > threshold).astype(np.uint8)
