#!/usr/bin/env python3
"""Regenerate core/tests/interop/fixtures.json with jwcrypto (an independent JOSE implementation).

Usage, from the workspace root:

    python3 -m venv /tmp/interop-venv
    /tmp/interop-venv/bin/pip install -r core/tests/interop/requirements.txt
    /tmp/interop-venv/bin/python core/tests/interop/generate.py            # writes fixtures.json
    /tmp/interop-venv/bin/python core/tests/interop/generate.py OUT.json   # or another path

then `cargo test -p keybound-core --test interop` checks keybound-core against the fixtures.

Every run generates fresh keys (so the file changes completely; the structure does not). Only
jwcrypto and the Python standard library are used: nothing here comes from keybound.

What is written, for each of ES256 (P-256), PS256 (RSA 2048) and EdDSA (Ed25519):
- the DPoP key's public JWK and jwcrypto's RFC 7638 SHA-256 thumbprint of it;
- a DPoP proof (RFC 9449) signed by that key, bound to the access token by `ath`;
- an RFC 9068 access token signed by a separate issuer key of the same alg, whose `cnf.jkt` is
  the DPoP key's thumbprint, and the issuer's JWKS.
Plus negative fixtures: objects made with jwcrypto that keybound-core must reject, each with the
expected `keybound_core::Error::reason()`.
"""

import base64
import hashlib
import json
import os
import sys
from importlib.metadata import version

from jwcrypto import jwk, jwt
from jwcrypto.common import base64url_decode, base64url_encode

ISSUER = "https://as.example.com"
AUDIENCE = "https://rs.example.com"
HTM = "POST"
# The URL of the request the proof is for; the proof's htu is the same URI without the query,
# as RFC 9449 §4.2 says (and core must ignore the query when comparing).
REQUEST_URL = "https://rs.example.com/api/resource?x=1"
HTU = "https://rs.example.com/api/resource"
IAT = 1700000000
EXP = IAT + 3600
NOW = IAT + 5
SCOPE = "read write"

ALGS = {
    "ES256": {"kty": "EC", "crv": "P-256"},
    "PS256": {"kty": "RSA", "size": 2048},
    "EdDSA": {"kty": "OKP", "crv": "Ed25519"},
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ath_of(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def new_key(alg: str, kid=None) -> jwk.JWK:
    params = dict(ALGS[alg])
    if kid is not None:
        params["kid"] = kid
    return jwk.JWK.generate(**params)


def public_jwk(key: jwk.JWK) -> dict:
    """The public JWK without kid (what goes in a DPoP proof header)."""
    pub = key.export_public(as_dict=True)
    pub.pop("kid", None)
    return pub


def sign(key: jwk.JWK, header: dict, claims: dict) -> str:
    token = jwt.JWT(header=header, claims=claims)
    token.make_signed_token(key)
    return token.serialize()


def proof_claims(alg: str, access_token: str, **overrides) -> dict:
    claims = {
        "jti": f"jwcrypto-{alg.lower()}-proof-{b64url(os.urandom(16))}",
        "htm": HTM,
        "htu": HTU,
        "iat": IAT,
        "ath": ath_of(access_token),
    }
    claims.update(overrides)
    return claims


def make_proof(key: jwk.JWK, alg: str, claims: dict, typ="dpop+jwt", header_jwk=None) -> str:
    header = {"typ": typ, "alg": alg, "jwk": header_jwk if header_jwk is not None else public_jwk(key)}
    return sign(key, header, claims)


def token_claims(alg: str, jkt: str, **overrides) -> dict:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": f"user-{alg.lower()}",
        "client_id": f"client-{alg.lower()}",
        "iat": IAT,
        "exp": EXP,
        "jti": f"jwcrypto-{alg.lower()}-token-{b64url(os.urandom(16))}",
        "scope": SCOPE,
        "cnf": {"jkt": jkt},
    }
    claims.update(overrides)
    return claims


def make_token(issuer_key: jwk.JWK, alg: str, claims: dict, typ="at+jwt") -> str:
    header = {"typ": typ, "alg": alg, "kid": issuer_key["kid"]}
    return sign(issuer_key, header, claims)


def tamper_payload(compact: str, **changes) -> str:
    """Changes claims of a signed JWS, keeping its header and signature."""
    header, payload, signature = compact.split(".")
    claims = json.loads(base64url_decode(payload))
    claims.update(changes)
    payload = base64url_encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    return ".".join([header, payload, signature])


def jwks_of(*keys: jwk.JWK) -> dict:
    out = []
    for key, alg in keys:
        pub = key.export_public(as_dict=True)
        pub["alg"] = alg
        pub["use"] = "sig"
        out.append(pub)
    return {"keys": out}


def generate() -> dict:
    cases = []
    negatives = []

    def proof_negative(name, alg, description, proof, reason, access_token, method=HTM, url=REQUEST_URL):
        negatives.append(
            {
                "name": name,
                "kind": "proof",
                "alg": alg,
                "description": description,
                "proof": proof,
                "request": {"method": method, "url": url, "access_token": access_token},
                "expected_reason": reason,
            }
        )

    def token_negative(name, alg, description, token, jwks, reason):
        negatives.append(
            {
                "name": name,
                "kind": "token",
                "alg": alg,
                "description": description,
                "token": token,
                "jwks": jwks,
                "expected_reason": reason,
            }
        )

    for alg in ALGS:
        dpop_key = new_key(alg)
        issuer_kid = f"issuer-{alg.lower()}-1"
        issuer_key = new_key(alg, kid=issuer_kid)
        jwks = jwks_of((issuer_key, alg))
        jkt = dpop_key.thumbprint()

        claims = token_claims(alg, jkt)
        token = make_token(issuer_key, alg, claims)
        pclaims = proof_claims(alg, token)
        proof = make_proof(dpop_key, alg, pclaims)

        cases.append(
            {
                "alg": alg,
                "dpop_jwk": public_jwk(dpop_key),
                "dpop_jkt": jkt,
                "proof": proof,
                "proof_claims": pclaims,
                "request": {"method": HTM, "url": REQUEST_URL, "access_token": token},
                "issuer_jwks": jwks,
                "token": token,
                "token_claims": claims,
            }
        )

        a = alg.lower()
        # ---- proofs core must reject ----
        proof_negative(
            f"{a}_proof_wrong_htm",
            alg,
            "proof for GET presented with a POST request",
            make_proof(dpop_key, alg, proof_claims(alg, token, htm="GET")),
            "proof_htm_mismatch",
            token,
        )
        proof_negative(
            f"{a}_proof_wrong_htu",
            alg,
            "proof for another path",
            make_proof(dpop_key, alg, proof_claims(alg, token, htu="https://rs.example.com/api/other")),
            "proof_htu_mismatch",
            token,
        )
        proof_negative(
            f"{a}_proof_tampered_payload",
            alg,
            "valid proof whose payload was changed after signing (htm GET -> POST)",
            tamper_payload(make_proof(dpop_key, alg, proof_claims(alg, token, htm="GET")), htm="POST"),
            "proof_bad_signature",
            token,
        )
        proof_negative(
            f"{a}_proof_wrong_typ",
            alg,
            "proof with typ JWT instead of dpop+jwt",
            make_proof(dpop_key, alg, proof_claims(alg, token), typ="JWT"),
            "proof_wrong_typ",
            token,
        )
        proof_negative(
            f"{a}_proof_ath_for_other_token",
            alg,
            "proof whose ath is the hash of another access token",
            make_proof(dpop_key, alg, proof_claims(alg, token, ath=ath_of(token + "x"))),
            "proof_ath_mismatch",
            token,
        )
        proof_negative(
            f"{a}_proof_iat_too_old",
            alg,
            "proof issued an hour before now",
            make_proof(dpop_key, alg, proof_claims(alg, token, iat=IAT - 3600)),
            "proof_iat_out_of_window",
            token,
        )
        proof_negative(
            f"{a}_proof_private_key_in_header",
            alg,
            "proof whose header jwk carries the private key",
            make_proof(dpop_key, alg, proof_claims(alg, token), header_jwk=dpop_key.export_private(as_dict=True)),
            "proof_private_key_in_jwk",
            token,
        )
        other_key = new_key(alg)
        proof_negative(
            f"{a}_proof_signed_by_other_key",
            alg,
            "proof whose header jwk is not the key that signed it",
            make_proof(other_key, alg, proof_claims(alg, token), header_jwk=public_jwk(dpop_key)),
            "proof_bad_signature",
            token,
        )
        no_ath = proof_claims(alg, token)
        del no_ath["ath"]
        proof_negative(
            f"{a}_proof_without_ath",
            alg,
            "proof presented with an access token but without ath",
            make_proof(dpop_key, alg, no_ath),
            "proof_missing_claim",
            token,
        )

        # ---- tokens core must reject ----
        rogue_key = new_key(alg, kid=f"rogue-{a}")
        token_negative(
            f"{a}_token_signed_by_key_not_in_jwks",
            alg,
            "token signed by a key whose kid is not in the JWKS",
            make_token(rogue_key, alg, token_claims(alg, jkt)),
            jwks,
            "token_unknown_key",
        )
        impostor_key = new_key(alg, kid=issuer_kid)
        token_negative(
            f"{a}_token_signed_by_other_key_with_issuer_kid",
            alg,
            "token signed by another key that claims the issuer key's kid",
            make_token(impostor_key, alg, token_claims(alg, jkt)),
            jwks,
            "token_bad_signature",
        )
        token_negative(
            f"{a}_token_tampered_payload",
            alg,
            "valid token whose scope was changed after signing",
            tamper_payload(token, scope="read write admin"),
            jwks,
            "token_bad_signature",
        )
        token_negative(
            f"{a}_token_expired",
            alg,
            "token that expired before now",
            make_token(issuer_key, alg, token_claims(alg, jkt, iat=IAT - 7200, exp=IAT - 3600)),
            jwks,
            "token_expired",
        )
        token_negative(
            f"{a}_token_wrong_audience",
            alg,
            "token for another resource server",
            make_token(issuer_key, alg, token_claims(alg, jkt, aud="https://other.example.com")),
            jwks,
            "token_audience_mismatch",
        )
        token_negative(
            f"{a}_token_wrong_issuer",
            alg,
            "token from another issuer, signed with the expected issuer's key",
            make_token(issuer_key, alg, token_claims(alg, jkt, iss="https://evil.example.com")),
            jwks,
            "token_issuer_mismatch",
        )
        token_negative(
            f"{a}_token_typ_jwt",
            alg,
            "token with typ JWT instead of at+jwt (e.g. an ID token)",
            make_token(issuer_key, alg, token_claims(alg, jkt), typ="JWT"),
            jwks,
            "token_wrong_typ",
        )

        # ---- binding: both valid, but the token is bound to another key ----
        other_bound = make_token(issuer_key, alg, token_claims(alg, other_key.thumbprint()))
        negatives.append(
            {
                "name": f"{a}_token_bound_to_other_key",
                "kind": "binding",
                "alg": alg,
                "description": "valid token and valid proof, but cnf.jkt is another key's thumbprint",
                "proof": make_proof(dpop_key, alg, proof_claims(alg, other_bound)),
                "request": {"method": HTM, "url": REQUEST_URL, "access_token": other_bound},
                "token": other_bound,
                "jwks": jwks,
                "expected_reason": "jkt_mismatch",
            }
        )

    # ---- algorithms core never accepts ----
    hmac_key = jwk.JWK.generate(kty="oct", size=256, kid="issuer-es256-1")
    token_negative(
        "hs256_token",
        "HS256",
        "token MACed with HS256 (symmetric algs are never allowed)",
        make_token(hmac_key, "HS256", token_claims("HS256", cases[0]["dpop_jkt"])),
        cases[0]["issuer_jwks"],
        "token_alg_not_allowed",
    )
    rs_key = new_key("PS256", kid="issuer-ps256-1")
    token_negative(
        "rs256_token",
        "RS256",
        "token signed with RS256, not in the default allowlist",
        make_token(rs_key, "RS256", token_claims("RS256", cases[1]["dpop_jkt"])),
        cases[1]["issuer_jwks"],
        "token_alg_not_allowed",
    )
    ed_key = new_key("EdDSA")
    proof_negative(
        "es256_alg_with_ed25519_jwk",
        "ES256",
        "proof header says ES256 but its jwk is an Ed25519 key",
        # header alg and key disagree: sign with EdDSA, then relabel the header
        relabel_alg(make_proof(ed_key, "EdDSA", proof_claims("EdDSA", cases[0]["token"])), "ES256"),
        "proof_alg_key_mismatch",
        cases[0]["token"],
    )

    return {
        "generated_by": (
            f"core/tests/interop/generate.py with jwcrypto {version('jwcrypto')} "
            f"(cryptography {version('cryptography')}); regenerate, do not edit"
        ),
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "now": NOW,
        "cases": cases,
        "negative": negatives,
    }


def relabel_alg(compact: str, alg: str) -> str:
    header, payload, signature = compact.split(".")
    h = json.loads(base64url_decode(header))
    h["alg"] = alg
    header = base64url_encode(json.dumps(h, separators=(",", ":")).encode("utf-8"))
    return ".".join([header, payload, signature])


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "fixtures.json")
    doc = generate()
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {out}: {len(doc['cases'])} cases, {len(doc['negative'])} negative fixtures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
