// An independent OAuth 2.0 / OIDC client, panva's oauth4webapi, completes a FAPI 2.0 flow against
// keybound-authz: discovery, PAR with private_key_jwt and a DPoP proof (retrying on
// use_dpop_nonce), login and consent as a browser would (form posts with the transaction cookie),
// the authorization response checked for `iss` and `state`, the code exchanged with PKCE and DPoP,
// the ID token checked (nonce), UserInfo called with the DPoP-bound token, and a refresh.
// Prints one JSON line with the results; exits non-zero on any failure.
//
// Environment: ISSUER, CLIENT_ID, CLIENT_JWK (private P-256 JWK with kid), USERNAME, PASSWORD,
// REDIRECT_URI; NODE_EXTRA_CA_CERTS names the dev CA.
import * as oauth from 'oauth4webapi'

const env = process.env
const issuer = new URL(env.ISSUER)
const redirectUri = env.REDIRECT_URI

const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oidc' }))
const client = { client_id: env.CLIENT_ID, id_token_signed_response_alg: 'ES256' }
const jwk = JSON.parse(env.CLIENT_JWK)
const clientKey = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign'])
const clientAuth = oauth.PrivateKeyJwt({ key: clientKey, kid: jwk.kid })
const dpopKeys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
const DPoP = oauth.DPoP(client, dpopKeys)

let nonceRetries = 0
async function withNonceRetry(fn) {
  try {
    return await fn()
  } catch (err) {
    if (oauth.isDPoPNonceError(err)) {
      nonceRetries++
      return await fn()
    }
    throw err
  }
}

const codeVerifier = oauth.generateRandomCodeVerifier()
const codeChallenge = await oauth.calculatePKCECodeChallenge(codeVerifier)
const state = oauth.generateRandomState()
const nonce = oauth.generateRandomNonce()
const params = {
  response_type: 'code',
  redirect_uri: redirectUri,
  scope: 'openid accounts',
  code_challenge: codeChallenge,
  code_challenge_method: 'S256',
  state,
  nonce,
}
const par = await withNonceRetry(async () =>
  oauth.processPushedAuthorizationResponse(
    as,
    client,
    await oauth.pushedAuthorizationRequest(as, client, clientAuth, params, { DPoP }),
  ),
)

// The browser: open the authorization URL, log in, consent.
const authUrl = new URL(as.authorization_endpoint)
authUrl.searchParams.set('client_id', client.client_id)
authUrl.searchParams.set('request_uri', par.request_uri)
let res = await fetch(authUrl, { redirect: 'manual' })
if (res.status !== 200) throw new Error(`authorize: ${res.status}`)
const cookie = res.headers.get('set-cookie').split(';')[0]
const txn = (await res.text()).match(/name="txn" value="([^"]+)"/)[1]
const form = (o) => ({
  method: 'POST',
  redirect: 'manual',
  headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
  body: new URLSearchParams(o).toString(),
})
res = await fetch(new URL('/authorize/login', issuer), form({ txn, username: env.USERNAME, password: env.PASSWORD }))
if (res.status !== 200) throw new Error(`login: ${res.status}`)
res = await fetch(new URL('/authorize/consent', issuer), form({ txn, decision: 'allow' }))
if (res.status !== 303) throw new Error(`consent: ${res.status}`)
const callback = oauth.validateAuthResponse(as, client, new URL(res.headers.get('location')), state)

const tokens = await withNonceRetry(async () =>
  oauth.processAuthorizationCodeResponse(
    as,
    client,
    await oauth.authorizationCodeGrantRequest(as, client, clientAuth, callback, redirectUri, codeVerifier, { DPoP }),
    { expectedNonce: nonce, requireIdToken: true },
  ),
)
const idClaims = oauth.getValidatedIdTokenClaims(tokens)
const userinfo = await withNonceRetry(async () =>
  oauth.processUserInfoResponse(
    as,
    client,
    idClaims.sub,
    await oauth.userInfoRequest(as, client, tokens.access_token, { DPoP }),
  ),
)
const refreshed = await withNonceRetry(async () =>
  oauth.processRefreshTokenResponse(
    as,
    client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token, { DPoP }),
  ),
)
console.log(
  JSON.stringify({
    token_type: tokens.token_type,
    access_token: tokens.access_token,
    refreshed_token_type: refreshed.token_type,
    refreshed_access_token: refreshed.access_token,
    id_token_sub: idClaims.sub,
    userinfo_sub: userinfo.sub,
    nonce_retries: nonceRetries,
  }),
)
