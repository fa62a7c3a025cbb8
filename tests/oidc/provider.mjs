// A certified OpenID provider (panva/oidc-provider) for the sign-in tests, on a loopback port.
// Usage: node provider.mjs <port> <redirect_uri> <client_secret> [access_token_seconds] [client_jwks_file]
// With a JWKS file the client authenticates with private_key_jwt (RS512, as NHS login requires) and only
// that way; otherwise with client_secret_basic. Prints "ready <issuer>" once it listens. Its people carry the claims the exchange maps
// (organisation, role, purpose, MDT, name) under the "lhcie" scope, as a CIS2 tenant's would.
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const [port, redirectUri, secret, accessSeconds = "3600", jwksFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const people = {
  "smith-a": { sub: "smith-a", name: "Dr A. Smith", org: "RJ1", role: "mdt-coordinator",
               purpose: "cancer-care", mdt: "rj1-lung" },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: "lhcie-console",
    redirect_uris: [redirectUri],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    ...(jwksFile
      ? { token_endpoint_auth_method: "private_key_jwt", token_endpoint_auth_signing_alg: "RS512",
          jwks: JSON.parse(readFileSync(jwksFile, "utf8")) }
      : { token_endpoint_auth_method: "client_secret_basic", client_secret: secret }),
  }],
  enabledJWA: { clientAuthSigningAlgValues: ["RS256", "RS512", "PS256", "ES256"] },
  pkce: { required: () => true },
  scopes: ["openid", "offline_access", "profile", "lhcie"],
  claims: { openid: ["sub"], profile: ["name"], lhcie: ["org", "role", "purpose", "mdt"] },
  findAccount: async (ctx, id) => people[id] && { accountId: id, claims: async () => people[id] },
  issueRefreshToken: async () => true,
  ttl: { AccessToken: Number(accessSeconds), IdToken: 3600, RefreshToken: 86400, Grant: 86400,
         Interaction: 600, Session: 86400, AuthorizationCode: 60 },
  cookies: { keys: ["lhcie-test-only"] },
  features: { devInteractions: { enabled: true } },
});
provider.listen(Number(port), "127.0.0.1", () => console.log(`ready ${issuer}`));
