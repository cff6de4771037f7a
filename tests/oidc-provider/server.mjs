// A foreign authorization server for keybound-browser's login (tests/tests/browser_oidc_provider.rs):
// panva's oidc-provider (npm), configured for one public browser client with DPoP (nonces
// required), PKCE, OpenID Connect (RS256 ID tokens, its default), refresh tokens (rotated and
// bound to the DPoP key), RP-initiated logout, its development login and consent pages, JWT access
// tokens (ES256, `at+jwt`) for one API audience, and PAR on or off.
//
// usage: node server.mjs CONFIG.json
//   CONFIG.json: {"port" (0: any), "client_id", "redirect_uri", "post_logout_redirect_uri",
//                 "audience", "access_token_ttl" (seconds), "par" (true: PAR offered; false: the
//                 PAR endpoint is off and not in the metadata)}
//   The issuer is http://127.0.0.1:PORT (loopback http: keybound-browser accepts it). The signing
//   keys (RS256 for ID tokens, ES256 for access tokens) are generated at start.
// Prints "listening on http://127.0.0.1:PORT" when it accepts connections.

import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));

function jwk(type, options, extra) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: "jwk" }), use: "sig", ...extra };
}

const server = createServer();
server.listen(config.port, "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: config.client_id,
        client_name: "keybound-browser e2e",
        application_type: "web",
        token_endpoint_auth_method: "none",
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        redirect_uris: [config.redirect_uri],
        post_logout_redirect_uris: [config.post_logout_redirect_uri],
        dpop_bound_access_tokens: true,
      },
    ],
    jwks: {
      keys: [
        jwk("rsa", { modulusLength: 2048 }, { alg: "RS256", kid: "rs-1" }),
        jwk("ec", { namedCurve: "P-256" }, { alg: "ES256", kid: "es-1" }),
      ],
    },
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    scopes: ["openid", "offline_access", "accounts"],
    claims: { openid: ["sub"] },
    // Every login of the public client gets a refresh token (without asking for offline_access).
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
    features: {
      devInteractions: { enabled: true },
      dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
      pushedAuthorizationRequests: { enabled: config.par === true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: "accounts",
          audience: config.audience,
          accessTokenTTL: config.access_token_ttl,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "ES256" } },
        }),
      },
    },
  });
  provider.on("server_error", (_ctx, err) => console.error("server_error", err));
  provider.on("grant.error", (_ctx, err) => console.error("grant.error", err.message, err.error_description));
  provider.on("authorization.error", (_ctx, err) => console.error("authorization.error", err.message, err.error_description));
  provider.on("pushed_authorization_request.error", (_ctx, err) => console.error("par.error", err.message, err.error_description));
  server.on("request", provider.callback());
  console.log(`listening on ${issuer}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
