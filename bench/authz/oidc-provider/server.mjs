// The comparison server of the token-endpoint benchmark (bench/authz/README.md): panva's
// oidc-provider, configured for the flow keybound-authz is measured on: client_credentials,
// private_key_jwt (ES256) client authentication, DPoP-bound (ES256) JWT access tokens signed with
// ES256, over TLS (HTTP/1.1, keep-alive). DPoP nonces are off (no `nonceSecret`), as in the
// keybound-authz configuration of the benchmark; DPoP and client-assertion `jti` replay checks stay
// on (oidc-provider's default in-memory adapter).
//
// usage: node server.mjs CONFIG.json
//   CONFIG.json: {"issuer", "port", "cert", "key" (PEM files), "client_id", "client_jwk"
//                 (public JWK of the client's assertion key), "audience", "scope", "ttl"}
//   The ES256 key the server signs access tokens with is generated at start.
// Prints "listening on 127.0.0.1:PORT" when it accepts connections.

import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:https";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const signingJwk = { ...privateKey.export({ format: "jwk" }), alg: "ES256", use: "sig", kid: "bench-1" };

const provider = new Provider(config.issuer, {
  clients: [
    {
      client_id: config.client_id,
      token_endpoint_auth_method: "private_key_jwt",
      token_endpoint_auth_signing_alg: "ES256",
      id_token_signed_response_alg: "ES256", // the only server key is ES256 (no ID tokens here)
      grant_types: ["client_credentials"],
      response_types: [],
      redirect_uris: [],
      jwks: { keys: [config.client_jwk] },
      dpop_bound_access_tokens: true,
      scope: config.scope,
    },
  ],
  jwks: { keys: [signingJwk] },
  scopes: [config.scope],
  clientAuthMethods: ["private_key_jwt"],
  enabledJWA: {
    clientAuthSigningAlgValues: ["ES256"],
    dPoPSigningAlgValues: ["ES256"],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: { enabled: true, allowReplay: false },
    // JWT access tokens (RFC 9068 style, ES256) for the one resource server, as keybound-authz issues.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => config.audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: config.scope,
        audience: config.audience,
        accessTokenTTL: config.ttl,
        accessTokenFormat: "jwt",
        jwt: { sign: { alg: "ES256" } },
      }),
    },
  },
  ttl: { ClientCredentials: config.ttl },
});

// The one bench client fails nothing on purpose: log server errors so a broken setup is visible.
provider.on("server_error", (_ctx, err) => console.error("server_error", err));

const server = createServer(
  { cert: readFileSync(config.cert), key: readFileSync(config.key) },
  provider.callback(),
);
server.keepAliveTimeout = 60_000;
server.listen(config.port, "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
