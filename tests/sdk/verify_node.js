// The JS side of a callsign token: the official identity SDK issues it, and
// @azure/communication-common's CommunicationTokenCredential (its implementation,
// AzureCommunicationTokenCredential, which chat and calling clients are given) accepts it and
// reads its expiry from the token itself.
//
//   npm ci --prefix target/ci-node   (package.json and package-lock.json in this folder)
//   NODE_PATH=target/ci-node/node_modules NODE_EXTRA_CA_CERTS=callsign-data/tls/cert.pem \
//   COMMUNICATION_SERVICES_CONNECTION_STRING='endpoint=https://127.0.0.1:8443/;accesskey=...' \
//       node tests/sdk/verify_node.js
"use strict";

const assert = require("node:assert/strict");
const { CommunicationIdentityClient } = require("@azure/communication-identity");
const { AzureCommunicationTokenCredential } = require("@azure/communication-common");

function claims(token) {
  const parts = token.split(".");
  assert.equal(parts.length, 3, "a token is a JWT");
  return JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
}

async function main() {
  const connectionString = process.env.COMMUNICATION_SERVICES_CONNECTION_STRING;
  assert.ok(connectionString, "COMMUNICATION_SERVICES_CONNECTION_STRING is not set");
  const client = new CommunicationIdentityClient(connectionString);

  // A day-long token, made with the identity.
  const { user, token, expiresOn } = await client.createUserAndToken(["chat", "voip"]);
  const credential = new AzureCommunicationTokenCredential(token);
  const accessToken = await credential.getToken();
  assert.equal(accessToken.token, token, "the credential hands back the token");
  assert.equal(accessToken.expiresOnTimestamp, claims(token).exp * 1000, "expiry read from exp");
  assert.ok(
    Math.abs(accessToken.expiresOnTimestamp - expiresOn.getTime()) < 1000,
    `expiresOn ${expiresOn.toISOString()} and the token's exp agree`,
  );
  const lifetime = accessToken.expiresOnTimestamp - Date.now();
  assert.ok(Math.abs(lifetime - 24 * 3600 * 1000) < 120 * 1000, `lives a day, not ${lifetime} ms`);
  credential.dispose();
  console.log(`${user.communicationUserId}: token accepted, expires ${expiresOn.toISOString()}`);

  // An hour-long token through a refreshing credential, as chat clients are built.
  const refreshing = new AzureCommunicationTokenCredential({
    tokenRefresher: async () =>
      (await client.getToken(user, ["chat"], { tokenExpiresInMinutes: 60 })).token,
    refreshProactively: false,
  });
  const refreshed = await refreshing.getToken();
  const hour = refreshed.expiresOnTimestamp - Date.now();
  assert.ok(Math.abs(hour - 3600 * 1000) < 120 * 1000, `lives an hour, not ${hour} ms`);
  assert.equal(claims(refreshed.token).sub, user.communicationUserId);
  refreshing.dispose();
  console.log(`refreshed token accepted, expires ${new Date(refreshed.expiresOnTimestamp).toISOString()}`);

  // What is not a JWT is refused.
  assert.throws(() => new AzureCommunicationTokenCredential("not-a-token"));
  console.log("CommunicationTokenCredential checks passed");
}

main().catch((error) => {
  console.error(`FAILED: ${error && error.stack ? error.stack : error}`);
  process.exit(1);
});
