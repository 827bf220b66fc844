#!/usr/bin/env python3
"""Makes keys and JWTs for tests/auth.rs with PyJWT + cryptography: tokens made by a
library independent of the plugin's own (Rust jsonwebtoken).

stdin: {"tokens": {NAME: {"alg": ALG, "key": KEY, "claims": {...}, "headers": {...}}}}
  KEY is the name of a generated key (rsa, rsa2, ec256, ec384, ed) or {"secret": "..."}.
  ALG "none" makes an unsigned token; ALG "HS256-with-public-pem" HMAC-signs with the
  PEM text of KEY's *public* key as the secret (the HS/RS confusion attack), by hand,
  since PyJWT rightly refuses to.
      {"sha256": {NAME: TEXT}, "bcrypt": {NAME: [PASSWORD, COST]}}
stdout: {"keys": {NAME: {"public_pem": ..., "jwk": {...}}}, "tokens": {NAME: TOKEN},
         "sha256": {NAME: HEX}, "bcrypt": {NAME: HASH}}
Keys are generated only when tokens are asked for.
"""
import base64
import hashlib
import hmac
import json
import sys

import bcrypt
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    spec = json.load(sys.stdin)
    out = {
        "sha256": {n: hashlib.sha256(t.encode()).hexdigest() for n, t in spec.get("sha256", {}).items()},
        "bcrypt": {
            n: bcrypt.hashpw(p.encode(), bcrypt.gensalt(cost)).decode() for n, (p, cost) in spec.get("bcrypt", {}).items()
        },
    }
    if "tokens" in spec:
        out.update(sign(spec["tokens"]))
    json.dump(out, sys.stdout)


def sign(jobs):
    private = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec256": ec.generate_private_key(ec.SECP256R1()),
        "ec384": ec.generate_private_key(ec.SECP384R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
    }
    to_jwk = {"rsa": RSAAlgorithm, "rsa2": RSAAlgorithm, "ec256": ECAlgorithm, "ec384": ECAlgorithm, "ed": OKPAlgorithm}
    keys = {}
    for name, key in private.items():
        public = key.public_key()
        keys[name] = {
            "public_pem": public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode(),
            "jwk": json.loads(to_jwk[name].to_jwk(public)),
        }
    tokens = {}
    for name, job in jobs.items():
        alg, claims, headers = job["alg"], job.get("claims", {}), job.get("headers") or None
        key = job.get("key")
        if alg == "HS256-with-public-pem":
            head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
            body = b64(json.dumps(claims).encode())
            secret = keys[key]["public_pem"].encode()
            sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
            tokens[name] = f"{head}.{body}.{b64(sig)}"
            continue
        if alg == "none":
            tokens[name] = jwt.encode(claims, None, algorithm="none", headers=headers)
            continue
        signing = key["secret"] if isinstance(key, dict) else private[key]
        tokens[name] = jwt.encode(claims, signing, algorithm=alg, headers=headers)
    return {"keys": keys, "tokens": tokens}


main()
