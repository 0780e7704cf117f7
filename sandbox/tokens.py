"""Signing and checking the tokens the simulated Entra issues (RS256 JWTs)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox import timeutil


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TokenIssuer:
    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        self.public_key = key.public_key()
        der = self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:15]).decode()

    def sign(self, claims: dict[str, Any], lifetime: int) -> str:
        stamp = int(timeutil.now().timestamp())
        payload = {"iat": stamp, "nbf": stamp, "exp": stamp + lifetime, "uti": uuid.uuid4().hex}
        payload.update(claims)
        return jwt.encode(
            payload, self.key, algorithm="RS256", headers={"kid": self.kid, "x5t": self.kid}
        )

    def verify(self, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
        """Claims of a token this issuer signed; raises jwt.PyJWTError otherwise."""
        options = {"verify_aud": audiences is not None, "require": ["exp", "iat"]}
        claims: dict[str, Any] = jwt.decode(
            token,
            self.public_key,
            algorithms=["RS256"],
            audience=audiences,
            options=options,  # type: ignore[arg-type]
            leeway=0,
        )
        return claims

    def jwks(self) -> dict[str, Any]:
        numbers = self.public_key.public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "x5t": self.kid,
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                    "alg": "RS256",
                }
            ]
        }
