"""Certificates: prove a result optimal to a stated gap, or a sparse layer the unique solution.

Two kinds (DESIGN section 5, paper 004), numpy only, so that they check a backend without trusting it:

* **Duality gap** (:func:`verify`): for any :class:`~convexnet.SparsityProgram` result from the
  terms' conjugates (:mod:`~convexnet.certificates.programs`), and for a Net-Trim layer from its
  dual repaired to feasibility (:func:`duality_gap`, :mod:`~convexnet.certificates.layer`);
* **Uniqueness** (:func:`uniqueness_certificate`, :func:`layer_uniqueness_certificate`,
  :mod:`~convexnet.certificates.uniqueness`): Proposition 2's dual certificate that a sparse column
  is the unique solution of the ``epsilon = 0`` program (8)/(9).
"""

from .layer import CertificateReport, duality_gap, primal_violation, verify
from .programs import ProgramCertificate, certify_program
from .uniqueness import (
    LayerUniquenessCertificate,
    UniquenessCertificate,
    layer_uniqueness_certificate,
    uniqueness_certificate,
)

__all__ = [
    "CertificateReport",
    "ProgramCertificate",
    "certify_program",
    "duality_gap",
    "primal_violation",
    "verify",
    "UniquenessCertificate",
    "LayerUniquenessCertificate",
    "uniqueness_certificate",
    "layer_uniqueness_certificate",
]
