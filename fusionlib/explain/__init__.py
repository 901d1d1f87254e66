"""What a fold's head learned.

- :mod:`.weights`: raw fusion weights, the Jacobians of the head, the sensitivity (effective
  clinical) share and the influence share.
- :mod:`.fold`: one fold's explanation (:func:`explain_weights`: the deployed head, the same
  head fitted to convergence and its untrained start) and the image branches' train/test gap.
"""

from .fold import explain_weights, image_branch_gap
from .weights import (effective_clinical_share, influence_share, modality_jacobians,
                      raw_fusion_weights)

__all__ = ["effective_clinical_share", "explain_weights", "image_branch_gap",
           "influence_share", "modality_jacobians", "raw_fusion_weights"]
