"""The sign-in client's private key (private_key_jwt): loaded from PEM for the algorithm it can sign,
refused at start-up with the setting's name when it cannot be used, and never alongside a secret. The
flow itself runs against oidc-provider in tests/e2e/test_signin_oidc.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from services.signin.client_key import ClientKey
from services.signin.settings import SignInSettings


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


RSA_PEM = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PEM = pem(ec.generate_private_key(ec.SECP256R1()))


def test_a_key_signs_only_the_algorithms_of_its_kind() -> None:
    assert ClientKey.load(RSA_PEM, key_id="k1", alg="RS512").key.key_type == "RSA"
    assert ClientKey.load(EC_PEM, key_id=None, alg="ES256").key.key_type == "EC"
    with pytest.raises(ValueError, match="cannot sign ES256"):
        ClientKey.load(RSA_PEM, key_id=None, alg="ES256")
    with pytest.raises(ValueError, match="cannot sign RS512"):
        ClientKey.load(EC_PEM, key_id=None, alg="RS512")


def test_the_settings_name_what_is_wrong(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(RSA_PEM)
    loaded = SignInSettings(client_key_file=key, client_key_id="lhcie-1").client_key()
    assert loaded is not None and (loaded.alg, loaded.key_id) == ("RS512", "lhcie-1")
    assert SignInSettings().client_key() is None
    with pytest.raises(ValueError, match=r"^LHCIE_OIDC_CLIENT_KEY_FILE: "):
        SignInSettings(client_key_file=tmp_path / "missing.pem").client_key()
    (tmp_path / "not-a-key.pem").write_text("not a key")
    with pytest.raises(ValueError, match=r"^LHCIE_OIDC_CLIENT_KEY_FILE: "):
        SignInSettings(client_key_file=tmp_path / "not-a-key.pem").client_key()
    with pytest.raises(ValidationError, match="not both"):
        SignInSettings(client_key_file=key, client_secret_file=tmp_path / "secret")
    with pytest.raises(ValidationError, match="LHCIE_OIDC_CLIENT_KEY_ALG"):
        SignInSettings(client_key_file=key, client_key_alg="HS256")
