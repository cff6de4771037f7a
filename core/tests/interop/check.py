#!/usr/bin/env python3
"""Verify, with jwcrypto, the DPoP proofs and access tokens that keybound-core made.

Usage, from the workspace root:

    python3 -m venv /tmp/interop-venv
    /tmp/interop-venv/bin/pip install -r core/tests/interop/requirements.txt
    cargo run -q -p keybound-core --example interop_emit > /tmp/core.json
    /tmp/interop-venv/bin/python core/tests/interop/check.py /tmp/core.json

The input is the JSON document printed by core/examples/interop_emit.rs. For every case (one per
algorithm) this checks, using jwcrypto only (plus hashlib for `ath`):
- the proof: typ dpop+jwt, alg, a public header jwk equal to core's JWK, the signature verifies
  with that jwk, the claims (jti, htm, htu without query, iat, ath) are the expected ones;
- jwcrypto's RFC 7638 thumbprint of the JWK equals core's;
- ath equals base64url(SHA-256(token)) computed here;
- the token: typ at+jwt, alg, kid; the signature verifies with the key of the issuer JWKS that has
  that kid; the claims are the expected ones; cnf.jkt is jwcrypto's thumbprint of the proof key;
  it is valid at `now`;
- negative controls: a proof and a token with a changed payload are refused by jwcrypto (so a
  verification that accepts everything cannot pass).

Prints one line per check, then `interop: N passed, M failed`; exits 1 if M > 0 or N == 0.
"""

import base64
import hashlib
import json
import sys

from jwcrypto import jwk, jws
from jwcrypto.common import base64url_decode, base64url_encode

PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k", "oth")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn):
        try:
            detail = fn()
        except Exception as e:  # any failure of a check, including a crash, is a failed check
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            return
        self.passed += 1
        print(f"ok   {name}" + (f" ({detail})" if detail else ""))


class CheckError(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckError(msg)


def expect_eq(got, want, what):
    expect(got == want, f"{what}: got {got!r}, expected {want!r}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parts(compact: str):
    expect(isinstance(compact, str) and compact.count(".") == 2, "not a compact JWS")
    h, p, _s = compact.split(".")
    return json.loads(base64url_decode(h)), json.loads(base64url_decode(p))


def verify(compact: str, key: jwk.JWK, alg: str) -> jws.JWS:
    """Verifies a compact JWS with jwcrypto, allowing only `alg`; raises if it does not verify."""
    obj = jws.JWS()
    obj.allowed_algs = [alg]
    obj.deserialize(compact)
    obj.verify(key, alg=alg)
    return obj


def change_payload(compact: str, **changes) -> str:
    h, p, s = compact.split(".")
    claims = json.loads(base64url_decode(p))
    claims.update(changes)
    return ".".join([h, base64url_encode(json.dumps(claims, separators=(",", ":")).encode("utf-8")), s])


def refused(compact: str, key: jwk.JWK, alg: str) -> str:
    try:
        verify(compact, key, alg)
    except Exception as e:
        return f"refused: {type(e).__name__}"
    raise CheckError("jwcrypto accepted a JWS whose payload was changed after signing")


def check_case(c: Checks, doc: dict, case: dict):
    alg = case["alg"]
    tag = alg.lower()
    proof = case["proof"]
    token = case["token"]
    now = doc["now"]

    def proof_header():
        header, _ = parts(proof)
        expect_eq(header.get("typ"), "dpop+jwt", "typ")
        expect_eq(header.get("alg"), alg, "alg")
        expect_eq(header, {**case["expected_proof_header"], "jwk": header.get("jwk")}, "header members")
        hjwk = header.get("jwk")
        expect(isinstance(hjwk, dict), "no jwk in the header")
        expect(not any(m in hjwk for m in PRIVATE_MEMBERS), "private member in the header jwk")
        expect_eq(hjwk, case["dpop_jwk"], "header jwk vs core's public JWK")

    def proof_signature():
        header, _ = parts(proof)
        key = jwk.JWK(**header["jwk"])
        verify(proof, key, alg)
        return f"kty {key['kty']}"

    def thumbprint():
        header, _ = parts(proof)
        from_header = jwk.JWK(**header["jwk"]).thumbprint()
        from_doc = jwk.JWK(**case["dpop_jwk"]).thumbprint()
        expect_eq(from_doc, case["dpop_jkt"], "jwcrypto thumbprint vs core's")
        expect_eq(from_header, case["dpop_jkt"], "thumbprint of the proof's header jwk vs core's")
        return case["dpop_jkt"]

    def proof_claims():
        key = jwk.JWK(**parts(proof)[0]["jwk"])
        claims = json.loads(verify(proof, key, alg).payload)
        expect_eq(claims, case["expected_proof_claims"], "proof claims")
        expect("?" not in claims["htu"] and "#" not in claims["htu"], "htu carries a query or fragment")
        expect(isinstance(claims["iat"], int) and abs(claims["iat"] - now) <= 300, "iat outside the window")

    def ath():
        _, claims = parts(proof)
        want = b64url(hashlib.sha256(token.encode("ascii")).digest())
        expect_eq(claims.get("ath"), want, "proof ath vs sha256(token)")
        expect_eq(case["expected_proof_claims"]["ath"], want, "core's expected ath vs sha256(token)")

    def token_header():
        header, _ = parts(token)
        expect_eq(header, case["expected_token_header"], "token header")
        expect_eq(header.get("typ"), "at+jwt", "typ")
        expect("jwk" not in header, "jwk in a token header")

    def token_signature():
        header, _ = parts(token)
        keyset = jwk.JWKSet.from_json(json.dumps(case["issuer_jwks"]))
        key = keyset.get_key(header["kid"])
        expect(key is not None, f"kid {header['kid']!r} is not in the JWKS")
        expect(not key.has_private, "private key in the JWKS")
        verify(token, key, alg)
        return f"kid {header['kid']}"

    def token_claims():
        keyset = jwk.JWKSet.from_json(json.dumps(case["issuer_jwks"]))
        key = keyset.get_key(parts(token)[0]["kid"])
        claims = json.loads(verify(token, key, alg).payload)
        expect_eq(claims, case["expected_token_claims"], "token claims")
        expect_eq(claims["iss"], doc["issuer"], "iss")
        expect_eq(claims["aud"], doc["audience"], "aud")
        for name in ("sub", "client_id", "jti", "scope"):
            expect(isinstance(claims.get(name), str) and claims[name], f"{name} missing")
        expect(claims["iat"] <= now < claims["exp"], "token not valid at now")

    def binding():
        _, claims = parts(token)
        key = jwk.JWK(**parts(proof)[0]["jwk"])
        expect_eq(claims["cnf"]["jkt"], key.thumbprint(), "cnf.jkt vs thumbprint of the proof key")

    def tampered_proof_refused():
        key = jwk.JWK(**parts(proof)[0]["jwk"])
        return refused(change_payload(proof, htm="GET"), key, alg)

    def tampered_token_refused():
        keyset = jwk.JWKSet.from_json(json.dumps(case["issuer_jwks"]))
        key = keyset.get_key(parts(token)[0]["kid"])
        return refused(change_payload(token, scope="read write admin"), key, alg)

    c.run(f"{tag}: proof header is typ dpop+jwt, alg {alg}, public jwk = core's JWK", proof_header)
    c.run(f"{tag}: proof signature verifies in jwcrypto with the header jwk", proof_signature)
    c.run(f"{tag}: jwcrypto RFC 7638 thumbprint equals core's", thumbprint)
    c.run(f"{tag}: proof claims jti/htm/htu/iat/ath are the expected ones", proof_claims)
    c.run(f"{tag}: proof ath equals base64url(sha256(token))", ath)
    c.run(f"{tag}: token header is typ at+jwt, alg {alg}, kid", token_header)
    c.run(f"{tag}: token signature verifies in jwcrypto with the issuer JWKS", token_signature)
    c.run(f"{tag}: token claims are the expected ones and valid at now", token_claims)
    c.run(f"{tag}: token cnf.jkt equals jwcrypto's thumbprint of the proof key", binding)
    c.run(f"{tag}: control: proof with a changed payload is refused by jwcrypto", tampered_proof_refused)
    c.run(f"{tag}: control: token with a changed payload is refused by jwcrypto", tampered_token_refused)


def main(argv) -> int:
    c = Checks()
    if len(argv) != 2:
        print("usage: check.py <path to the JSON printed by `cargo run -p keybound-core --example interop_emit`>")
        return 2
    doc = None

    def load():
        nonlocal doc
        with open(argv[1], encoding="utf-8") as f:
            doc = json.load(f)
        expect(isinstance(doc.get("cases"), list) and doc["cases"], "no cases")
        return f"{len(doc['cases'])} cases from {doc.get('generated_by', '?')}"

    c.run(f"load {argv[1]}", load)
    if doc is not None and isinstance(doc.get("cases"), list):
        for case in doc["cases"]:
            name = case.get("alg", "?") if isinstance(case, dict) else "?"
            try:
                check_case(c, doc, case)
            except Exception as e:  # a case too broken to even name its checks
                c.failed += 1
                print(f"FAIL {name}: {type(e).__name__}: {e}")
    print(f"interop: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed > 0 or c.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
