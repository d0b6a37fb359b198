"""Verifies callsign tokens as a downstream Python service would, with clients nobody here wrote.

The official Azure SDK (azure-communication-identity) issues the tokens; PyJWT's PyJWKClient
fetches the tenant's JWKS over HTTPS (found through its discovery document) and verifies them.
A token of another tenant, and a token altered by one byte, must fail. Then introspection,
signed with the tenant's access key as the README shows it, must see the same and, unlike
offline verification, a revocation made through the SDK. Exits non-zero on the first thing
that is wrong.

    pip install azure-communication-identity==1.5.0 'pyjwt[crypto]'
    COMMUNICATION_SERVICES_CONNECTION_STRING='endpoint=https://127.0.0.1:8443/;accesskey=...' \
    OTHER_CONNECTION_STRING='endpoint=https://127.0.0.2:8443/;accesskey=...' \
    REQUESTS_CA_BUNDLE=callsign-data/tls/cert.pem python verify_pyjwt.py

REQUESTS_CA_BUNDLE (callsign's generated certificate) is trusted by the SDK and, here, by the
JWKS client. OTHER_CONNECTION_STRING names a second tenant on the same server.
"""
import base64
import hashlib
import hmac
import json
import os
import ssl
import sys
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from email.utils import formatdate

import jwt
from azure.communication.identity import CommunicationIdentityClient, CommunicationTokenScope
from jwt import PyJWKClient


def fail(message):
    print(f"FAILED: {message}")
    sys.exit(1)


def endpoint_of(connection_string):
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    return parts["endpoint"]


def tenant_of(identity_id):
    # 8:acs:<tenant id>_<identity id>
    return identity_id[len("8:acs:"):].split("_", 1)[0]


def introspect(connection_string, token, ssl_context):
    """RFC 7662 introspection, HMAC-signed with the tenant's access key as the ACS SDKs sign."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    endpoint, key = parts["endpoint"], base64.b64decode(parts["accesskey"])
    body = urllib.parse.urlencode({"token": token}).encode()
    host = urllib.parse.urlsplit(endpoint).netloc
    date = formatdate(usegmt=True)
    content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    string_to_sign = f"POST\n/oauth2/introspect\n{date};{host};{content_hash}"
    signature = base64.b64encode(
        hmac.new(key, string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    request = urllib.request.Request(
        endpoint + "oauth2/introspect",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "x-ms-date": date,
            "x-ms-content-sha256": content_hash,
            "Authorization": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256"
            f"&Signature={signature}",
        },
    )
    with urllib.request.urlopen(request, context=ssl_context, timeout=10) as response:
        return json.load(response)


class Tenant:
    """One tenant as a downstream service sees it: its discovery document and a JWKS client."""

    def __init__(self, connection_string, ssl_context):
        self.client = CommunicationIdentityClient.from_connection_string(connection_string)
        endpoint = endpoint_of(connection_string)
        url = endpoint + ".well-known/openid-configuration"
        with urllib.request.urlopen(url, context=ssl_context, timeout=10) as response:
            cache_control = response.headers.get("Cache-Control", "")
            self.discovery = json.load(response)
        if "max-age" not in cache_control:
            fail(f"{url} has no max-age in Cache-Control: {cache_control!r}")
        if self.discovery["issuer"] != endpoint:
            fail(f"discovery issuer {self.discovery['issuer']!r} is not the endpoint {endpoint!r}")
        self.issuer = self.discovery["issuer"]
        self.algorithms = self.discovery["id_token_signing_alg_values_supported"]
        self.jwks = PyJWKClient(self.discovery["jwks_uri"], ssl_context=ssl_context)

    def verify(self, token, audience):
        """PyJWT's whole check: the key by kid from the JWKS, signature, iss, aud, exp, nbf."""
        signing_key = self.jwks.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            signing_key,
            algorithms=self.algorithms,
            issuer=self.issuer,
            audience=audience,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        )


def expect_refused(what, verify):
    try:
        verify()
    except (jwt.PyJWTError, jwt.PyJWKClientError) as error:
        print(f"{what}: refused ({type(error).__name__}: {error})")
        return
    fail(f"{what} verified")


def alter_one_byte(token, part, offset):
    """The token with one character of `part` (0 header, 1 payload, 2 signature) replaced."""
    parts = token.split(".")
    chars = list(parts[part])
    chars[offset] = "B" if chars[offset] != "B" else "C"
    parts[part] = "".join(chars)
    return ".".join(parts)


def alter_one_payload_byte(token):
    """The token with one byte of its decoded payload changed and re-encoded: still readable
    JSON (the last digit of `exp` moves), so only the signature can tell."""
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    at = raw.index(b'"exp":') + len(b'"exp":')
    while chr(raw[at + 1]).isdigit():
        at += 1
    raw[at] = ord("1") if raw[at] != ord("1") else ord("2")
    altered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return f"{header}.{altered}.{signature}"


def main():
    ca = os.environ.get("REQUESTS_CA_BUNDLE")
    ssl_context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    mine = Tenant(os.environ["COMMUNICATION_SERVICES_CONNECTION_STRING"], ssl_context)
    other = Tenant(os.environ["OTHER_CONNECTION_STRING"], ssl_context)
    if mine.issuer == other.issuer:
        fail("the two connection strings name the same tenant")

    user, access = mine.client.create_user_and_token(
        [CommunicationTokenScope.CHAT, CommunicationTokenScope.VOIP]
    )
    user_id = user.properties["id"]
    audience = f"callsign:{tenant_of(user_id)}"
    claims = mine.verify(access.token, audience)
    if claims["sub"] != user_id:
        fail(f"sub {claims['sub']!r} is not {user_id!r}")
    if sorted(claims["scp"].split(" ")) != ["chat", "voip"]:
        fail(f"scp {claims['scp']!r}")
    if claims["resourceId"] != tenant_of(user_id):
        fail(f"resourceId {claims['resourceId']!r}")
    expires_on = access.expires_on
    if isinstance(expires_on, str):
        expires_on = datetime.fromisoformat(expires_on.replace("Z", "+00:00"))
    if abs(claims["exp"] - expires_on.timestamp()) > 1:
        fail(f"exp {claims['exp']} does not match expiresOn {expires_on}")
    kid = jwt.get_unverified_header(access.token)["kid"]
    print(f"verified a token of {user_id} with key {kid} from {mine.discovery['jwks_uri']}")

    # A token issued later for the same identity, through get_token, verifies too.
    again = mine.client.get_token(user, [CommunicationTokenScope.VOIP])
    mine.verify(again.token, audience)

    # Another tenant's token: valid for its own tenant, refused by this one's keys.
    other_user, other_access = other.client.create_user_and_token([CommunicationTokenScope.CHAT])
    other_audience = f"callsign:{tenant_of(other_user.properties['id'])}"
    other.verify(other_access.token, other_audience)
    expect_refused(
        "another tenant's token against this tenant's JWKS",
        lambda: mine.verify(other_access.token, other_audience),
    )
    own_key = mine.jwks.get_signing_key_from_jwt(access.token)
    expect_refused(
        "another tenant's token against this tenant's key",
        lambda: jwt.decode(
            other_access.token, own_key, algorithms=mine.algorithms, options={"verify_aud": False}
        ),
    )

    # One byte changed, in the header, the payload or the signature.
    for part, name in ((1, "payload"), (2, "signature"), (0, "header")):
        altered = alter_one_byte(access.token, part, 5)
        if altered == access.token:
            fail("the alteration changed nothing")
        expect_refused(f"a token with one character of its {name} altered",
                       lambda t=altered: mine.verify(t, audience))
    altered = alter_one_payload_byte(access.token)
    extended = jwt.decode(altered, options={"verify_signature": False})["exp"]
    if extended == claims["exp"]:
        fail("the payload alteration changed nothing")
    try:
        mine.verify(altered, audience)
    except jwt.InvalidSignatureError:
        print(f"a token whose exp was altered by one byte ({claims['exp']} -> {extended}): "
              "refused (InvalidSignatureError)")
    else:
        fail("a token with an altered exp verified")

    # Introspection agrees, and also knows about revocations.
    mine_cs = os.environ["COMMUNICATION_SERVICES_CONNECTION_STRING"]
    answer = introspect(mine_cs, access.token, ssl_context)
    if not answer.get("active") or answer.get("sub") != user_id or answer.get("scope") != claims["scp"]:
        fail(f"introspection of a fresh token answered {answer}")
    for what, token in (("another tenant's token", other_access.token),
                        ("an altered token", alter_one_payload_byte(access.token))):
        answer = introspect(mine_cs, token, ssl_context)
        if answer != {"active": False}:
            fail(f"introspection of {what} answered {answer}")
    mine.client.revoke_tokens(user)
    answer = introspect(mine_cs, access.token, ssl_context)
    if answer != {"active": False}:
        fail(f"introspection of a revoked token answered {answer}")
    mine.verify(access.token, audience)  # offline verification cannot know
    print("introspection: active, then inactive once revoked through the SDK")

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(f"PyJWT checks passed at {now}")


if __name__ == "__main__":
    main()
