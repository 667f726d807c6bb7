// panva/oidc-provider as a real OAuth 2.0 / OIDC peer for tokenbroker's tests.
//
// Usage: node server.mjs [port]   (port 0 or absent = any free port; env PEER_PORT also works)
// Binds 127.0.0.1 only and prints "listening <port>" once it accepts requests. The test fixture
// passes the clients through the environment (nothing secret is hard-coded here):
//   PEER_CLIENTS       JSON list of {client_id, client_secret, token_endpoint_auth_method}
//   PEER_REDIRECT_URI  the one registered redirect URI (never served; the test reads Location)
//   PEER_ACCESS_TTL, PEER_REFRESH_TTL  token lifetimes in seconds
//   PEER_COOKIE_KEY    signing key for the interaction cookies
import { createServer } from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

function env(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback === undefined) {
      throw new Error(`missing environment variable ${name}`);
    }
    return fallback;
  }
  return value;
}

const requestedPort = Number(process.argv[2] ?? process.env.PEER_PORT ?? 0);
const redirectUri = env('PEER_REDIRECT_URI');
const accessTtl = Number(env('PEER_ACCESS_TTL', '60'));
const refreshTtl = Number(env('PEER_REFRESH_TTL', '600'));
const clients = JSON.parse(env('PEER_CLIENTS')).map((client) => ({
  ...client,
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: [redirectUri],
  scope: 'openid offline_access email profile',
}));

// Every user name is a valid account (devInteractions accept any login); the claims make
// userinfo worth testing: the email is derived from the login.
async function findAccount(_ctx, sub) {
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        email: `${sub}@peer.test`,
        email_verified: true,
        name: `Peer ${sub}`,
      };
    },
  };
}

function configuration() {
  return {
    clients,
    findAccount,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    cookies: { keys: [env('PEER_COOKIE_KEY')] },
    features: {
      devInteractions: { enabled: true },
    },
    pkce: { required: () => true },
    // issueRefreshToken keeps its default, as OpenID Connect says: a refresh token only when
    // offline_access was granted, which oidc-provider honours only with prompt=consent. The catalog
    // entry sends that prompt through authorize_params, and the tests check it arrived.
    rotateRefreshToken: () => true,
    ttl: {
      AccessToken: accessTtl,
      AuthorizationCode: 60,
      IdToken: accessTtl,
      RefreshToken: refreshTtl,
      Interaction: 600,
      Session: 600,
      Grant: refreshTtl,
    },
  };
}

const server = createServer();
server.listen(requestedPort, '127.0.0.1', () => {
  const { port } = server.address();
  // The issuer needs the real port, so the provider is built after the socket is bound.
  const provider = new Provider(`http://127.0.0.1:${port}`, configuration());
  server.on('request', provider.callback());
  process.stdout.write(`listening ${port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
