// Test authorization server for tokend's end-to-end tests.
//
// An oidc-provider instance on 127.0.0.1 with a fixed set of clients, plus a
// small test-control API under /__test/ (counters and fault injection).
//
// stdout carries exactly one line, the ready line:
//   {"issuer":"http://127.0.0.1:NNNN","port":NNNN}
// everything else goes to stderr (per-request logs only with PROVIDER_DEBUG=1).
//
// Environment:
//   PORT            listen port (default 0 = random)
//   AT_TTL          access token lifetime in seconds (default 3600)
//   RT_TTL          refresh token lifetime in seconds (default 14 days)
//   CLOCK_TOLERANCE seconds past `exp` a token is still accepted (oidc-provider's
//                   clockTolerance, default 15; the soak sets 0: a token is refused
//                   the second it expires, as strict resource servers do)
//   PROVIDER_DEBUG  1 = log every request to stderr
//   DPOP_NONCE      1 = DPoP proofs must carry a server nonce (use_dpop_nonce
//                   + DPoP-Nonce otherwise); DPoP itself is always on
//
// Workload identity (issue 20): `pkjwt-ec` / `pkjwt-rsa` authenticate with
// private_key_jwt (keys in keys/); `fed-cc` with federated client assertions
// signed by the trusted workload issuer (keys/workload_issuer.pem), whose
// tokens GET /__test/mint?sub=S&aud=A[&iss=I][&ttl=N] hands out (what a
// Kubernetes API server or GitHub Actions would issue); `jwtb-client` uses
// the jwt-bearer grant with such a token; `xchg-client` RFC 8693 token
// exchange (subject: an access token or ID token this provider issued).
// POST /__test/exchange_itt?omit=1 leaves issued_token_type out of exchange
// answers; GET /__test/resource?aud=A (Bearer token) is a resource server
// that accepts only active tokens for audience A.
//
// POST /__test/rt_pad?chars=N pads every refresh token issued from then on
// to N more characters (0 = off; /__test/reset turns it off too).

import { createHash, createPrivateKey, createPublicKey, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as querystring from 'node:querystring';
import * as jose from 'jose';

// oidc-provider prints its notices with console.info (stdout); stdout is
// reserved for the ready line, so route every console method to stderr.
for (const m of ['log', 'info', 'debug']) {
  // eslint-disable-next-line no-console
  console[m] = (...args) => console.error(...args);
}

const { default: Provider, errors } = await import('oidc-provider');

const DEBUG = process.env.PROVIDER_DEBUG === '1';
const PORT = Number.parseInt(process.env.PORT ?? '0', 10) || 0;
const AT_TTL = Number.parseInt(process.env.AT_TTL ?? '3600', 10) || 3600;
const DPOP_NONCE = process.env.DPOP_NONCE === '1';
const RT_POLICY_STOCK = process.env.RT_POLICY === 'stock';
const CLOCK_TOLERANCE = Number.parseInt(process.env.CLOCK_TOLERANCE ?? '15', 10);
const RT_TTL = Number.parseInt(process.env.RT_TTL ?? String(14 * 24 * 3600), 10) || 14 * 24 * 3600;

const log = (...args) => { if (DEBUG) console.error('[provider]', ...args); };

// ---------------------------------------------------------------- test state

const stats = {
  token_calls: 0,
  by_grant: {},
  revocations: 0,
  revoked: [],
  dropped: 0,
  // The jti of every client assertion and jwt-bearer assertion received.
  client_assertions: [],
  bearer_assertions: [],
  exchanges: [],
};
let omitIssuedTokenType = false;
let faults = []; // queue of {kind, ms} for the next token calls
let delays = []; // queue of delays (ms) for the next token calls
let rtPad = 0; // chars of padding on every refresh token issued (0 = none)
const FAULT_KINDS = new Set(['500', '503', '429', 'timeout', 'garbage', 'truncated', 'reset', 'slow']);
// Token calls being processed by oidc-provider right now (past the faults):
// a client killed while one runs may lose the refresh token it rotates.
let processing = 0;
// While true, token calls wait before reaching oidc-provider; a call whose
// client went away meanwhile is dropped unprocessed.
let held = false;

function resetStats() {
  stats.token_calls = 0;
  stats.by_grant = {};
  stats.revocations = 0;
  stats.revoked = [];
  stats.dropped = 0;
  stats.client_assertions = [];
  stats.bearer_assertions = [];
  stats.exchanges = [];
  omitIssuedTokenType = false;
  faults = [];
  delays = [];
  held = false;
  rtPad = 0;
}

// Large refresh tokens (Microsoft Entra's are several KiB): with padding on,
// a refresh token leaves as `TOKEN.PAD`, PAD derived from TOKEN, and comes
// back checked: a torn or altered token (a store that split it and joined
// it back wrong) is refused with invalid_grant, as a real provider would.
function padFor(token, n) {
  let pad = '';
  for (let i = 0; pad.length < n; i += 1) {
    pad += createHash('sha256').update(`${token}:${i}`).digest('base64url');
  }
  return pad.slice(0, n);
}

// The refresh token oidc-provider issued, or undefined when `value` is
// padded and its padding does not match. (Its own tokens have no `.`.)
function unpad(value) {
  const dot = value.indexOf('.');
  if (dot < 0) return value;
  const token = value.slice(0, dot);
  const pad = value.slice(dot + 1);
  return pad.length > 0 && pad === padFor(token, pad.length) ? token : undefined;
}

// ---------------------------------------------------------------- the server

const GRANTS = ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'];
const REDIRECT = ['http://127.0.0.1/callback'];
const common = {
  application_type: 'native', // loopback redirect with any port matches
  redirect_uris: REDIRECT,
  response_types: ['code'],
};

// ------------------------------------------------ workload identity keys

const keyFile = (name) => readFileSync(new URL(`./keys/${name}`, import.meta.url), 'utf8');
function publicJwk(name, kid) {
  const jwk = createPublicKey(createPrivateKey(keyFile(name))).export({ format: 'jwk' });
  return { ...jwk, kid, use: 'sig' };
}
const workloadKey = createPrivateKey(keyFile('workload_issuer.pem'));
const workloadJwk = publicJwk('workload_issuer.pem', 'workload-1');
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TT = (t) => `urn:ietf:params:oauth:token-type:${t}`;

const clients = [
  {
    ...common, client_id: 'public-pkce', token_endpoint_auth_method: 'none', grant_types: GRANTS,
  },
  {
    ...common, client_id: 'conf-basic', client_secret: 'p@ss:w+rd/=%&?', token_endpoint_auth_method: 'client_secret_basic', grant_types: GRANTS,
  },
  {
    ...common, client_id: 'conf-post', client_secret: 'post-secret', token_endpoint_auth_method: 'client_secret_post', grant_types: GRANTS,
  },
  // For scripts/bench's oidc-agent account: oidc-agent sends the secret in
  // the Basic header without form-encoding it, so a secret with no special
  // characters.
  {
    ...common, client_id: 'plain-basic', client_secret: 'plain-secret', token_endpoint_auth_method: 'client_secret_basic', grant_types: GRANTS,
  },
  {
    client_id: 'cc-client', client_secret: 'cc-secret', token_endpoint_auth_method: 'client_secret_basic', grant_types: ['client_credentials'], redirect_uris: [], response_types: [],
  },
  {
    ...common, client_id: 'pkjwt-ec', token_endpoint_auth_method: 'private_key_jwt', grant_types: [...GRANTS, 'client_credentials'], jwks: { keys: [publicJwk('client_ec.pem', 'ec-1')] },
  },
  {
    ...common, client_id: 'pkjwt-rsa', token_endpoint_auth_method: 'private_key_jwt', grant_types: [...GRANTS, 'client_credentials'], jwks: { keys: [publicJwk('client_rsa.pem', 'rsa-1')] },
  },
  {
    client_id: 'fed-cc', token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], redirect_uris: [], response_types: [], jwks: { keys: [workloadJwk] },
  },
  {
    client_id: 'jwtb-client', token_endpoint_auth_method: 'none', grant_types: [JWT_BEARER], redirect_uris: [], response_types: [],
  },
  {
    client_id: 'xchg-client', token_endpoint_auth_method: 'none', grant_types: [TOKEN_EXCHANGE], redirect_uris: [], response_types: [],
  },
];

// Any login is accepted; the account answers userinfo with a few claims.
async function findAccount(_ctx, sub) {
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        name: `Test User ${sub}`,
        preferred_username: sub,
        email: `${sub}@example.test`,
        email_verified: true,
      };
    },
  };
}

// Bind first (port 0 = random) so the issuer can carry the real port; the
// provider's request handler is attached once it exists.
const server = http.createServer();
const port = await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', () => resolve(server.address().port));
});
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients,
  findAccount,
  clockTolerance: Number.isNaN(CLOCK_TOLERANCE) ? 15 : CLOCK_TOLERANCE,
  // Fixed cookie keys: tests never run long enough for rotation to matter.
  cookies: { keys: ['tokend-e2e-cookie-key-0123456789abcdef'] },
  scopes: ['openid', 'profile', 'email', 'offline_access', 'read', 'write'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    userinfo: { enabled: true },
    introspection: { enabled: true },
    // RFC 9449: a token request with a DPoP proof gets a DPoP-bound token
    // (cnf.jkt); requests without one are unaffected.
    dPoP: {
      enabled: true,
      ...(DPOP_NONCE ? {
        nonceSecret: Buffer.from('tokend-e2e-dpop-nonce-secret-32b'),
        requireNonce: () => true,
      } : {}),
    },
    // Plain OAuth: no resource indicators, tokens are opaque and audience is
    // the userinfo endpoint.
    resourceIndicators: { enabled: false },
    rpInitiatedLogout: { enabled: false },
  },
  pkce: {
    // PKCE (S256 only; plain is not supported by oidc-provider) for everyone.
    required: () => true,
  },
  // A refresh token on every code / device_code grant for clients allowed the
  // refresh_token grant, without the offline_access dance; RT_POLICY=stock
  // keeps oidc-provider's own policy (OIDC Core §11): a refresh token only
  // when offline_access was granted, which needs prompt=consent.
  ...(RT_POLICY_STOCK ? {} : {
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  }),
  // Rotation on for every client: a reused rotated RT revokes the grant.
  rotateRefreshToken: () => true,
  // Tokens should not die with the (browser) session.
  expiresWithSession: async () => false,
  ttl: {
    AccessToken: AT_TTL,
    ClientCredentials: AT_TTL,
    AuthorizationCode: 60,
    DeviceCode: 600,
    IdToken: 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    RefreshToken: RT_TTL,
  },
  // The dev consent form only grants what the interaction asks for; always
  // reuse the grant of the session.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><head><title>oops</title></head><body><h1>oops! something went wrong</h1><pre>${
      Object.entries(out).map(([k, v]) => `${k}: ${String(v).replace(/[<>&]/g, '')}`).join('\n')
    }</pre></body></html>`;
  },
});
provider.proxy = false;

// ------------------------------------------------ jwt-bearer and token exchange

const workloadIssuer = `${issuer}/__test/workload`;
const tokenEndpoint = provider.urlFor('token');

// RFC 7523 §2.1: the assertion is the grant. Accepted from the trusted
// workload issuer (as Keycloak and Entra trust a configured issuer), for
// this provider as audience.
provider.registerGrantType(JWT_BEARER, async (ctx) => {
  const { params, client } = ctx.oidc;
  let payload;
  try {
    ({ payload } = await jose.jwtVerify(params.assertion, createPublicKey(workloadKey), {
      issuer: workloadIssuer,
      audience: [issuer, tokenEndpoint],
      requiredClaims: ['exp', 'sub', 'jti'],
    }));
  } catch (e) {
    throw new errors.InvalidGrant(`the assertion is not from the trusted issuer: ${e.message}`);
  }
  stats.bearer_assertions.push(payload.jti);
  const token = new provider.AccessToken({
    client, accountId: payload.sub, scope: params.scope || undefined, gty: 'jwt_bearer',
  });
  const value = await token.save();
  ctx.body = {
    access_token: value, token_type: 'Bearer', expires_in: token.expiration, scope: token.scope,
  };
}, ['assertion', 'scope']);

// RFC 8693: a subject access token or ID token this provider issued is
// exchanged for an access token for the asked `audience`.
provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
  const { params, client } = ctx.oidc;
  let accountId;
  let scope;
  if (params.subject_token_type === TT('access_token')) {
    const subject = await provider.AccessToken.find(params.subject_token);
    if (!subject?.isValid) throw new errors.InvalidGrant('subject_token is not an active access token');
    ({ accountId, scope } = subject);
  } else if (params.subject_token_type === TT('id_token')) {
    let claims;
    try {
      claims = jose.decodeJwt(params.subject_token);
      const aud = Array.isArray(claims.aud) ? claims.aud[0] : claims.aud;
      const owner = await provider.Client.find(String(aud));
      if (!owner) throw new Error('unknown audience');
      await provider.IdToken.validate(params.subject_token, owner);
      if (claims.exp * 1000 < Date.now()) throw new Error('expired');
    } catch (e) {
      throw new errors.InvalidGrant(`subject_token is not a valid ID token: ${e.message}`);
    }
    accountId = claims.sub;
  } else {
    throw new errors.InvalidRequest('subject_token_type must be an access_token or id_token');
  }
  if (params.requested_token_type && params.requested_token_type !== TT('access_token')) {
    throw new errors.InvalidRequest('only access tokens are issued');
  }
  stats.exchanges.push({
    subject_token_type: params.subject_token_type,
    audience: params.audience ?? null,
    resource: params.resource ?? null,
  });
  const token = new provider.AccessToken({
    client, accountId, aud: params.audience || undefined, scope: params.scope || scope || undefined, gty: 'token_exchange',
  });
  const value = await token.save();
  ctx.body = {
    access_token: value,
    ...(omitIssuedTokenType ? {} : { issued_token_type: TT('access_token') }),
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: token.scope,
  };
}, ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'audience', 'resource', 'requested_token_type', 'scope'], ['resource', 'audience']);

provider.on('server_error', (ctx, err) => console.error('[provider] server_error', err));
if (DEBUG) {
  provider.on('grant.error', (ctx, err) => log('grant.error', err.message, err.error_description ?? '', err.error_detail ?? ''));
  provider.on('authorization.error', (ctx, err) => log('authorization.error', err.message, err.error_description ?? ''));
  provider.on('revocation.error', (ctx, err) => log('revocation.error', err.message));
}

// ------------------------------------------------------- test-control middleware

const tokenPath = new URL(provider.urlFor('token')).pathname;
const revocationPath = new URL(provider.urlFor('revocation')).pathname;

function sendJson(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = JSON.stringify(body);
}

async function readRawBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

// The registered authentication method of the secret clients, enforced strictly.
const STRICT_AUTH = {
  'conf-basic': 'client_secret_basic',
  'conf-post': 'client_secret_post',
  'cc-client': 'client_secret_basic',
};

function basicClientId(ctx) {
  const h = ctx.headers.authorization;
  if (!h || !h.toLowerCase().startsWith('basic ')) return undefined;
  const decoded = Buffer.from(h.slice(6), 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  return i < 0 ? undefined : decodeURIComponent(decoded.slice(0, i).replace(/\+/g, ' '));
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

// Hands a token call to oidc-provider, after any hold; a call whose client
// went away while it waited is dropped unprocessed (nobody would get what
// it rotates).
async function processed(ctx, next) {
  while (held) await sleep(5);
  if (ctx.req.socket.destroyed) {
    stats.dropped += 1;
    ctx.respond = false;
    return undefined;
  }
  processing += 1;
  try {
    return await next();
  } finally {
    processing -= 1;
  }
}

provider.use(async (ctx, next) => {
  const started = Date.now();
  try {
    const { path, method } = ctx;

    if (path.startsWith('/__test/')) {
      const q = ctx.query;
      if (path === '/__test/stats' && method === 'GET') {
        return sendJson(ctx, 200, stats);
      }
      if (path === '/__test/reset' && method === 'POST') {
        resetStats();
        return sendJson(ctx, 200, { ok: true });
      }
      if (path === '/__test/fault' && method === 'POST') {
        const kind = String(q.kind ?? '');
        const count = Number.parseInt(String(q.count ?? '1'), 10);
        const ms = q.ms === undefined ? undefined : Number.parseInt(String(q.ms), 10);
        if (!FAULT_KINDS.has(kind) || !(count >= 0) || (ms !== undefined && !(ms >= 0))) {
          return sendJson(ctx, 400, { error: `kind must be one of ${[...FAULT_KINDS].join('|')}, count >= 0, ms >= 0` });
        }
        for (let i = 0; i < count; i += 1) faults.push({ kind, ms });
        return sendJson(ctx, 200, { ok: true, pending: faults.map((f) => f.kind) });
      }
      if (path === '/__test/hold' && method === 'POST') {
        held = q.on !== '0';
        return sendJson(ctx, 200, { ok: true, held, processing });
      }
      if (path === '/__test/processing' && method === 'GET') {
        return sendJson(ctx, 200, { processing, held });
      }
      if (path === '/__test/delay' && method === 'POST') {
        const ms = Number.parseInt(String(q.ms ?? '0'), 10);
        const count = Number.parseInt(String(q.count ?? '1'), 10);
        if (!(ms >= 0) || !(count >= 0)) {
          return sendJson(ctx, 400, { error: 'ms >= 0, count >= 0' });
        }
        for (let i = 0; i < count; i += 1) delays.push(ms);
        return sendJson(ctx, 200, { ok: true, pending: delays });
      }
      if (path === '/__test/mint' && method === 'GET') {
        const ttl = Number.parseInt(String(q.ttl ?? '300'), 10);
        const jwt = await new jose.SignJWT({})
          .setProtectedHeader({ alg: 'ES256', kid: workloadJwk.kid, typ: 'JWT' })
          .setIssuer(String(q.iss ?? workloadIssuer))
          .setSubject(String(q.sub ?? 'system:serviceaccount:default:app'))
          .setAudience(String(q.aud ?? issuer))
          .setJti(randomUUID())
          .setIssuedAt()
          .setExpirationTime(Math.floor(Date.now() / 1000) + ttl)
          .sign(workloadKey);
        return sendJson(ctx, 200, { value: jwt });
      }
      if (path === '/__test/client_jwk' && method === 'GET') {
        const name = String(q.name ?? '');
        if (!/^[a-z_]+\.pem$/.test(name)) return sendJson(ctx, 400, { error: 'name=KEY.pem' });
        return sendJson(ctx, 200, publicJwk(name, null));
      }
      if (path === '/__test/exchange_itt' && method === 'POST') {
        omitIssuedTokenType = q.omit === '1';
        return sendJson(ctx, 200, { ok: true, omit: omitIssuedTokenType });
      }
      if (path === '/__test/resource' && method === 'GET') {
        const h = String(ctx.headers.authorization ?? '');
        const value = h.toLowerCase().startsWith('bearer ') ? h.slice(7) : '';
        const token = value ? await provider.AccessToken.find(value) : undefined;
        if (!token?.isValid) return sendJson(ctx, 401, { error: 'invalid_token' });
        if (token.aud !== q.aud) {
          return sendJson(ctx, 403, { error: 'insufficient_scope', error_description: `token audience ${token.aud ?? '(none)'}, not ${q.aud}` });
        }
        return sendJson(ctx, 200, { ok: true, sub: token.accountId, aud: token.aud });
      }
      if (path === '/__test/rt_pad' && method === 'POST') {
        const chars = Number.parseInt(String(q.chars ?? '0'), 10);
        if (!(chars >= 0)) return sendJson(ctx, 400, { error: 'chars >= 0' });
        rtPad = chars;
        return sendJson(ctx, 200, { ok: true, chars });
      }
      return sendJson(ctx, 404, { error: 'unknown test-control endpoint' });
    }

    if (method === 'POST' && (path === tokenPath || path === revocationPath)) {
      // Read the form body ourselves (to count by grant type even for calls
      // that fail), then hand it to oidc-provider as an already-parsed body.
      const raw = await readRawBody(ctx.req);
      const form = querystring.parse(raw);
      ctx.request.body = { ...form };
      if (typeof form.client_assertion === 'string') {
        let claims = {};
        try { claims = jose.decodeJwt(form.client_assertion); } catch { /* recorded as null */ }
        stats.client_assertions.push({
          jti: claims.jti ?? null, iss: claims.iss ?? null, sub: claims.sub ?? null, aud: claims.aud ?? null, at: path,
        });
      }

      if (path === revocationPath) {
        if (typeof form.token === 'string') ctx.request.body.token = unpad(form.token) ?? form.token;
        stats.revocations += 1;
        stats.revoked.push(typeof form.token_type_hint === 'string' ? form.token_type_hint : null);
        return await next();
      }

      stats.token_calls += 1;
      const grant = typeof form.grant_type === 'string' ? form.grant_type : '(none)';

      // Strict client authentication, as many real providers do it:
      // oidc-provider accepts Basic and post interchangeably for secret
      // clients, so enforce the registered method here.
      stats.by_grant[grant] = (stats.by_grant[grant] ?? 0) + 1;
      const registered = STRICT_AUTH[form.client_id] ?? STRICT_AUTH[basicClientId(ctx)];
      const used = ctx.headers.authorization ? 'client_secret_basic'
        : form.client_secret !== undefined ? 'client_secret_post' : undefined;
      if (registered && used && used !== registered) {
        return sendJson(ctx, 401, { error: 'invalid_client', error_description: `this client must authenticate with ${registered}` });
      }
      if (typeof form.refresh_token === 'string') {
        const token = unpad(form.refresh_token);
        if (token === undefined) {
          return sendJson(ctx, 400, { error: 'invalid_grant', error_description: 'the refresh token is torn or altered (its padding does not match)' });
        }
        ctx.request.body.refresh_token = token;
      }

      const delay = delays.shift();
      if (delay) await sleep(delay);

      const fault = faults.shift();
      switch (fault?.kind) {
        case '500':
          ctx.status = 500;
          ctx.type = 'html';
          ctx.body = '<!DOCTYPE html><html><body><h1>500 Internal Server Error</h1><p>injected fault</p></body></html>';
          return undefined;
        case '503':
          ctx.status = 503;
          ctx.type = 'html';
          ctx.set('Retry-After', '2');
          ctx.body = '<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1><p>injected fault</p></body></html>';
          return undefined;
        case '429':
          ctx.set('Retry-After', '2');
          return sendJson(ctx, 429, { error: 'too_many_requests', error_description: 'injected fault' });
        case 'timeout':
          await sleep(fault.ms ?? 60_000);
          ctx.status = 504;
          ctx.type = 'html';
          ctx.body = '<html><body>gateway timeout (injected)</body></html>';
          return undefined;
        case 'garbage':
          ctx.status = 200;
          ctx.type = 'application/json';
          ctx.body = 'this is not JSON {{{';
          return undefined;
        case 'truncated':
          ctx.status = 200;
          ctx.type = 'application/json';
          ctx.body = '{"access_token":"trunc';
          return undefined;
        case 'reset':
          ctx.req.socket.destroy();
          ctx.respond = false;
          return undefined;
        case 'slow':
          // A real answer, late: the grant is processed after the wait.
          await sleep(fault.ms ?? 1500);
          return await processed(ctx, next);
        default:
          await processed(ctx, next);
          if (rtPad > 0 && typeof ctx.body?.refresh_token === 'string') {
            ctx.body.refresh_token += `.${padFor(ctx.body.refresh_token, rtPad)}`;
          }
          return undefined;
      }
    }

    return await next();
  } finally {
    log(ctx.method, ctx.originalUrl, ctx.status, `${Date.now() - started}ms`);
  }
});

// ---------------------------------------------------------------- listen

server.on('request', provider.callback());
// A request held by a "timeout" fault must not keep the process alive on exit.
server.keepAliveTimeout = 5_000;

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);

const shutdown = () => {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// Exit when the parent closes our stdin (harness crashed without killing us).
if (process.env.PROVIDER_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', shutdown);
  process.stdin.resume();
}

