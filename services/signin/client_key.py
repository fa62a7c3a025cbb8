"""The private key the sign-in client proves itself with at the provider's token endpoint
(``private_key_jwt``, RFC 7523), loaded from a PEM file (a mounted Secret)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc.jwk import ECKey, RSAKey


@dataclass(frozen=True)
class ClientKey:
    """The private key the client signs its token-endpoint assertions with (``private_key_jwt``)."""

    key: RSAKey | ECKey
    key_id: str | None
    alg: str

    @classmethod
    def load(cls, pem: bytes, *, key_id: str | None, alg: str) -> ClientKey:
        """An RSA or EC private key in PEM; the algorithm must suit it (RS*/PS* for RSA, ES* for EC)."""
        loaded = load_pem_private_key(pem, password=None)
        if isinstance(loaded, rsa.RSAPrivateKey) and alg[:2] in ("RS", "PS"):
            return cls(RSAKey.import_key(pem), key_id, alg)
        if isinstance(loaded, ec.EllipticCurvePrivateKey) and alg.startswith("ES"):
            return cls(ECKey.import_key(pem), key_id, alg)
        raise ValueError(f"a {type(loaded).__name__} cannot sign {alg} client assertions")
