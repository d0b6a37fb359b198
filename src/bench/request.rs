//! Requests as the load generator sends them, prepared once and signed per send exactly as
//! the ACS SDKs sign them:
//!
//! ```text
//! Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<b64>
//! string to sign: VERB \n path-and-query \n <x-ms-date>;<host>;<x-ms-content-sha256>
//! ```
//!
//! Everything that does not change between sends is computed when a request is prepared: the
//! URI, the body and its SHA-256, the header values. What remains per send is one HMAC over a
//! few dozen bytes, with the key already absorbed into the MAC state that is cloned for it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::HeaderValue;
use http::{Method, StatusCode, Uri};
use sha2::{Digest, Sha256};

const AUTHORIZATION_PREFIX: &str =
    "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=";

/// A request ready to be signed and sent any number of times.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub method: Method,
    /// Origin form (`/path?query`), percent-encoded as sent: what the signature covers.
    pub uri: Uri,
    pub body: Bytes,
    /// Base64 SHA-256 of `body`, the `x-ms-content-sha256` header.
    pub content_hash: HeaderValue,
    pub content_type: Option<HeaderValue>,
    /// The status that means success for this operation.
    pub expected: StatusCode,
}

impl Prepared {
    fn new(
        method: Method,
        path_and_query: &str,
        body: Bytes,
        content_type: Option<&'static str>,
        expected: StatusCode,
    ) -> anyhow::Result<Self> {
        let uri: Uri = path_and_query.parse()?;
        let content_hash = HeaderValue::try_from(STANDARD.encode(Sha256::digest(&body)))?;
        Ok(Self {
            method,
            uri,
            body,
            content_hash,
            content_type: content_type.map(HeaderValue::from_static),
            expected,
        })
    }

    /// A request without a body.
    pub fn empty(
        method: Method,
        path_and_query: &str,
        expected: StatusCode,
    ) -> anyhow::Result<Self> {
        Self::new(method, path_and_query, Bytes::new(), None, expected)
    }

    /// A request with a JSON body.
    pub fn json(
        method: Method,
        path_and_query: &str,
        body: &serde_json::Value,
        expected: StatusCode,
    ) -> anyhow::Result<Self> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        Self::new(
            method,
            path_and_query,
            body,
            Some("application/json"),
            expected,
        )
    }

    /// A request with an `application/x-www-form-urlencoded` body.
    pub fn form(
        method: Method,
        path_and_query: &str,
        body: String,
        expected: StatusCode,
    ) -> anyhow::Result<Self> {
        Self::new(
            method,
            path_and_query,
            Bytes::from(body),
            Some("application/x-www-form-urlencoded"),
            expected,
        )
    }

    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }
}

/// Signs requests with a tenant's access key for one host.
#[derive(Clone)]
pub struct Signer {
    /// The key already absorbed: cloning this state is cheaper than keying a new MAC.
    mac: Hmac<Sha256>,
    /// `host[:port]` as the endpoint spells it, sent as `Host` and signed.
    host: HeaderValue,
}

impl Signer {
    pub fn new(access_key: &[u8], host: HeaderValue) -> anyhow::Result<Self> {
        let mac = Hmac::<Sha256>::new_from_slice(access_key)
            .map_err(|_| anyhow::anyhow!("the access key cannot key an HMAC"))?;
        Ok(Self { mac, host })
    }

    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The `Authorization` header for `request` sent with `date` as `x-ms-date`.
    pub fn authorization(&self, request: &Prepared, date: &HeaderValue) -> HeaderValue {
        let mut mac = self.mac.clone();
        mac.update(request.method.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(request.path_and_query().as_bytes());
        mac.update(b"\n");
        mac.update(date.as_bytes());
        mac.update(b";");
        mac.update(self.host.as_bytes());
        mac.update(b";");
        mac.update(request.content_hash.as_bytes());
        let mut value = String::with_capacity(AUTHORIZATION_PREFIX.len() + 44);
        value.push_str(AUTHORIZATION_PREFIX);
        STANDARD.encode_string(mac.finalize().into_bytes(), &mut value);
        // Prefix and base64 are visible ASCII, always a valid header value.
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The `x-ms-date` of the current second. RFC 1123 dates have whole seconds, so formatting
/// once per second gives every request the same fresh date the SDKs would compute for it,
/// without formatting a date per request.
pub struct DateHeader {
    second: u64,
    value: HeaderValue,
}

impl Default for DateHeader {
    fn default() -> Self {
        Self::new()
    }
}

impl DateHeader {
    pub fn new() -> Self {
        Self {
            second: u64::MAX,
            value: HeaderValue::from_static(""),
        }
    }

    pub fn now(&mut self) -> HeaderValue {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            // An HTTP date is visible ASCII, always a valid header value.
            if let Ok(value) = HeaderValue::try_from(httpdate::fmt_http_date(now)) {
                self.value = value;
                self.second = second;
            }
        }
        self.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The string-to-sign spelled out as the SDKs build it, for comparison with the
    /// incremental MAC.
    fn reference_signature(
        key: &[u8],
        verb: &str,
        pq: &str,
        date: &str,
        host: &str,
        hash: &str,
    ) -> String {
        let to_sign = format!("{verb}\n{pq}\n{date};{host};{hash}");
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
        mac.update(to_sign.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signs_the_sdk_string_to_sign() {
        let key = b"0123456789abcdef0123456789abcdef";
        let signer = Signer::new(key, HeaderValue::from_static("127.0.0.1:8443")).expect("signer");
        let request = Prepared::json(
            Method::POST,
            "/identities/8%3Aacs%3Ax_y/:issueAccessToken?api-version=2023-10-01",
            &serde_json::json!({"scopes": ["chat"]}),
            StatusCode::OK,
        )
        .expect("request");
        let hash = STANDARD.encode(Sha256::digest(br#"{"scopes":["chat"]}"#));
        assert_eq!(request.content_hash, hash.as_str());
        let date = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        let expected = reference_signature(
            key,
            "POST",
            "/identities/8%3Aacs%3Ax_y/:issueAccessToken?api-version=2023-10-01",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "127.0.0.1:8443",
            &hash,
        );
        assert_eq!(
            signer.authorization(&request, &date),
            format!("{AUTHORIZATION_PREFIX}{expected}").as_str()
        );
    }

    #[test]
    fn an_empty_body_hashes_as_the_sdks_hash_it() {
        let request = Prepared::empty(Method::GET, "/healthz", StatusCode::OK).expect("request");
        assert_eq!(
            request.content_hash,
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(request.content_type, None);
    }

    #[test]
    fn the_date_is_current_and_rfc_1123() {
        let mut dates = DateHeader::new();
        let value = dates.now();
        let parsed = httpdate::parse_http_date(value.to_str().expect("ascii")).expect("date");
        let skew = SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_else(|e| e.duration());
        assert!(skew.as_secs() <= 1, "{value:?}");
    }
}
