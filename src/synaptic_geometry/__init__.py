"""synaptic_geometry: mirror descent, weight-change statistics and the book that uses them.

The public API is the core that every chapter and the identify tool build on:

* potentials: :class:`Potential` and its kinds, :func:`get_potential` (by name, e.g.
  ``"negative_entropy"``, ``"3-norm"``, ``"hypentropy:0.1"``), and the book's named sets
  :data:`TRAINED_POTENTIALS` and :data:`CANDIDATE_POTENTIALS`, and the package's one finiteness
  check :func:`require_finite`;
* the optimizer: :class:`MirrorDescent` (a sibling of ``torch.optim.SGD``) and its functional
  core :func:`mirror_descent`;
* Gaussianity statistics: :func:`dual_change`, :func:`delta_cdf`, :func:`change_magnitude`
  and :func:`domain_mask` (the one sign/domain mask; the scoring of candidates is
  :func:`synaptic_geometry.gaussianity.identify`: the name ``synaptic_geometry.identify`` is
  the identify tool's subpackage);
* the scale-structure-aware statistic: :func:`rowcol_normalize` (alternating row and column RMS
  normalisation of a layer's dual change), :func:`corrected_delta_cdf`,
  :func:`identify_corrected` and its null :func:`corrected_gaussian_floor`.

The chapters' experiments live in :mod:`synaptic_geometry.experiments`, the identify tool in
:mod:`synaptic_geometry.identify`, the results store and sweeps in :mod:`synaptic_geometry.infra`,
and the book build in :mod:`synaptic_geometry.book`.
"""

from synaptic_geometry.gaussianity import (
    change_magnitude,
    delta_cdf,
    delta_cdf_batch,
    domain_mask,
    dual_change,
    gaussian_floor,
)
from synaptic_geometry.optim import MirrorDescent, mirror_descent
from synaptic_geometry.scale_correction import (
    corrected_change,
    corrected_delta_cdf,
    corrected_gaussian_floor,
    identify_corrected,
    layer_matrix,
    rowcol_normalize,
    scale_mixture,
)
from synaptic_geometry.potentials import (
    CANDIDATE_POTENTIALS,
    TRAINED_POTENTIALS,
    Hypentropy,
    NegativeEntropy,
    PNorm,
    Potential,
    display_name,
    get_potential,
    require_finite,
)

__version__ = "0.1.0"

__all__ = [
    "CANDIDATE_POTENTIALS",
    "TRAINED_POTENTIALS",
    "Hypentropy",
    "MirrorDescent",
    "NegativeEntropy",
    "PNorm",
    "Potential",
    "change_magnitude",
    "corrected_change",
    "corrected_delta_cdf",
    "corrected_gaussian_floor",
    "delta_cdf",
    "delta_cdf_batch",
    "display_name",
    "domain_mask",
    "dual_change",
    "gaussian_floor",
    "get_potential",
    "identify_corrected",
    "layer_matrix",
    "mirror_descent",
    "require_finite",
    "rowcol_normalize",
    "scale_mixture",
]
