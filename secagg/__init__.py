"""fortis.secagg: cryptographic building blocks for secure aggregation (no network, no torch).

* :mod:`secagg.encoding` -- fixed-point encoding into Z_{2^bits} with stochastic rounding.
* :mod:`secagg.prg` -- AES-256-CTR mask expansion into reused numpy buffers.
* :mod:`secagg.keys` -- X25519+HKDF key agreement, AES-GCM sealing, Ed25519 signatures.
* :mod:`secagg.shamir` -- Shamir t-of-n sharing over GF(2**256 + 297) with cached Lagrange
  coefficients, and error-correcting reconstruction (``shamir.decode``).
* :mod:`secagg.vss` -- Feldman verifiable secret sharing and Diffie-Hellman in a 2048-bit
  Schnorr group whose order is the Shamir field's prime.
* :mod:`secagg.graphs` -- complete and SecAgg+ masking graphs with their threshold rules.
* :mod:`secagg.masking` -- pairwise/self masking and unmasking.
* :mod:`secagg.sketch` -- exact ±1 sketches P·x from an AES-CTR seed, the projection seed;
  :mod:`secagg.sketch_distances` (exact Gram/distances), :mod:`secagg.sketch_bounds` (norm bound).
* :mod:`secagg.paillier` -- Paillier keys (phe-generated, gmpy2 arithmetic), pooled encryption,
  CRT decryption, ciphertext validation and bytes, homomorphic operations;
  :mod:`secagg.paillier_pool` (precomputed ``r**n``), :mod:`secagg.paillier_pack` (signed slots
  with checked headroom), :mod:`secagg.paillier_multiexp` (multi-exponentiation).
* :mod:`secagg.errors` -- the typed errors.
"""

from .encoding import FixedPointEncoder
from .errors import (
    CiphertextError,
    EncodingOverflowError,
    GraphError,
    GroupElementError,
    GroupParameterError,
    KeyAgreementError,
    PaillierKeyError,
    PaillierOverflowError,
    SecAggError,
    SecAggParameterError,
    ShamirError,
    ShareDecryptionError,
    SignatureError,
    SketchOverflowError,
    SketchParameterError,
)
from .graphs import MaskingGraph, complete_graph, secaggplus_graph, secaggplus_parameters
from .keys import KeyPair, SigningKeyPair, agree, open_sealed, seal, verify_signature
from .masking import mask_input, pairwise_seed, unmask_sum
from .paillier import PaillierPrivateKey, PaillierPublicKey, generate_paillier_keypair
from .paillier_multiexp import MultiExpTable, multi_exp
from .paillier_pack import SlotLayout
from .paillier_pool import ObfuscationPool
from .prg import MaskExpander
from .shamir import PRIME, reconstruct, share_from_bytes, share_to_bytes, split
from .sketch import Sketcher, projection_matrix, projection_seed, sketch
from .sketch_bounds import (
    fixed_point_norm_bound,
    norm_bound_epsilon,
    norm_bound_false_rejection,
    within_norm_bound,
)
from .sketch_distances import sketch_gram, sketch_squared_distances, sketch_squared_norms
from .vss import (
    Commitments,
    DHKeyPair,
    VerifiableSharing,
    deal,
    dh_agree,
    find_bad_shares,
    get_group,
    validate_dh_public_key,
    verify_share,
    verify_shares,
)

__all__ = [
    "FixedPointEncoder",
    "MaskExpander",
    "KeyPair",
    "SigningKeyPair",
    "agree",
    "seal",
    "open_sealed",
    "verify_signature",
    "PRIME",
    "split",
    "reconstruct",
    "share_to_bytes",
    "share_from_bytes",
    "get_group",
    "Commitments",
    "VerifiableSharing",
    "deal",
    "verify_share",
    "verify_shares",
    "find_bad_shares",
    "DHKeyPair",
    "dh_agree",
    "validate_dh_public_key",
    "MaskingGraph",
    "complete_graph",
    "secaggplus_graph",
    "secaggplus_parameters",
    "mask_input",
    "unmask_sum",
    "pairwise_seed",
    "PaillierPublicKey",
    "PaillierPrivateKey",
    "generate_paillier_keypair",
    "ObfuscationPool",
    "SlotLayout",
    "multi_exp",
    "MultiExpTable",
    "SecAggError",
    "SecAggParameterError",
    "EncodingOverflowError",
    "ShamirError",
    "ShareDecryptionError",
    "SignatureError",
    "GraphError",
    "KeyAgreementError",
    "GroupElementError",
    "GroupParameterError",
    "PaillierKeyError",
    "CiphertextError",
    "PaillierOverflowError",
    "Sketcher",
    "sketch",
    "projection_seed",
    "projection_matrix",
    "sketch_gram",
    "sketch_squared_norms",
    "sketch_squared_distances",
    "norm_bound_epsilon",
    "norm_bound_false_rejection",
    "fixed_point_norm_bound",
    "within_norm_bound",
    "SketchParameterError",
    "SketchOverflowError",
]
