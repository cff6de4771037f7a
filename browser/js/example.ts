// Type-checked (tsc --noEmit) by `cargo xtask test` against the types of the keybound-browser
// package installed from its tarball (resolved through its `exports` map): the README's examples,
// as an app would write them, with both entry points.
import init, {
  DpopKey,
  OAuthClient,
  isKeyboundError,
  type KeyboundError,
  type ProofOptions,
  type TokenResult,
} from "keybound-browser";
import initDpop, { DpopKey as SmallDpopKey } from "keybound-browser/dpop";

export async function example(accessToken: string): Promise<string> {
  await init();
  const key: DpopKey = await DpopKey.open({ clientId: "my-spa", softwareKey: "never" });
  if (key.storage === "memory") {
    console.warn("DPoP key is not persisted:", key.fallbackReason ?? "storage: memory requested");
  }
  const jkt: string = key.thumbprint(); // dpop_jkt for PAR, cnf.jkt of bound tokens

  const options: ProofOptions = { method: "POST", url: "https://as.example.com/token" };
  const proof: string = await key.createProof(options);

  const response: Response = await key.fetch("https://api.example.com/accounts", { method: "GET" }, accessToken);
  const plain: Response = await key.fetch("https://api.example.com/public");
  void plain;
  const nonce: string | undefined = key.nonceFor("https://api.example.com/");
  const offset: number = key.clockOffset;

  try {
    await key.createProof({ method: "GET", url: "/relative" });
  } catch (e) {
    if (isKeyboundError(e)) {
      const err: KeyboundError = e;
      const code: string | null = err.code;
      console.log(code, err.reason);
    }
  }
  await key.wipe();
  return `${jkt} ${proof.length} ${response.status} ${nonce} ${offset}`;
}

// The README's login example: PAR + PKCE + DPoP, tokens in memory.
export async function login(): Promise<string | undefined> {
  await init();
  const key = await DpopKey.open({ clientId: "my-spa" });
  const client: OAuthClient = await OAuthClient.create(key, {
    issuer: "https://as.example.com",
    clientId: "my-spa",
    redirectUri: "https://app.example.com/cb",
    scope: "openid accounts",
  });
  if (client.isCallback(location.href)) {
    const callback = location.href;
    history.replaceState(null, "", "/");
    try {
      const tokens: TokenResult = await client.completeLogin(callback);
      const expiresIn: number | undefined = tokens.expiresIn;
      void expiresIn;
    } catch (e) {
      if (isKeyboundError(e) && (e.reason === "state_mismatch" || e.reason === "iss_mismatch")) {
        console.warn("not our login:", e.message);
      } else if (isKeyboundError(e) && e.code === "access_denied") {
        console.warn("the user said no");
      }
      throw e;
    }
  } else {
    location.assign(await client.startLogin({ scope: "openid accounts" }));
    return undefined;
  }
  const accounts: Response = await client.fetch("https://api.example.com/accounts");
  const refreshed: TokenResult = await client.refresh();
  const hasRefresh: boolean = client.hasRefreshToken;
  const token: string | undefined = client.accessToken;
  client.logout();
  await key.wipe();
  return `${accounts.status} ${refreshed.tokenType} ${hasRefresh} ${token}`;
}

// The types are precise, not `any`: each of these lines must be a type error.
export async function misuse(key: DpopKey): Promise<void> {
  // @ts-expect-error url is required
  await key.createProof({ method: "GET" });
  // @ts-expect-error storage is "indexeddb" | "memory"
  await DpopKey.open({ clientId: "c", storage: "cookies" });
  // @ts-expect-error storage is read-only
  key.storage = "memory";
  // @ts-expect-error createProof resolves to a string
  const n: number = await key.createProof({ method: "GET", url: "https://a.example/" });
  void n;
  // @ts-expect-error init is a RequestInit
  await key.fetch("https://a.example/", 42);
  await key.fetch("https://a.example/", undefined, "token"); // no init, with a token: fine
  // @ts-expect-error redirectUri is required
  await OAuthClient.create(key, { issuer: "https://as.example", clientId: "c" });
  const client = await OAuthClient.create(key, { issuer: "https://as.example", clientId: "c", redirectUri: "https://a/cb" });
  // @ts-expect-error startLogin resolves to the authorization URL, a string
  const url: number = await client.startLogin();
  void url;
  // @ts-expect-error the refresh token is not exposed
  void client.refreshToken;
  // @ts-expect-error tokenType is "DPoP"
  const bearer: "Bearer" = (await client.refresh()).tokenType;
  void bearer;
}

// The dpop entry: keys, proofs and fetch, the same API, no login.
export async function dpopOnly(accessToken: string): Promise<Response> {
  await initDpop();
  const key: SmallDpopKey = await SmallDpopKey.open({ clientId: "my-spa" });
  const proof: string = await key.createProof({ method: "GET", url: "https://api.example.com/me", accessToken });
  console.log(proof.split(".").length === 3);
  return key.fetch("https://api.example.com/me", { method: "GET" }, accessToken);
}
