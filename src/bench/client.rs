//! One keep-alive HTTP/1.1 connection of the load generator.
//!
//! Built on hyper's connection-level client (`hyper::client::conn::http1`) rather than
//! reqwest or hyper-util's pooled client: each load worker owns exactly one connection and
//! sends one request at a time on it (a closed loop, like one SDK client per thread), so a
//! pool would only add a lock, a pool lookup and a URL parse per request without adding
//! anything. The generator shares two cores with the server and its database, and every
//! cycle it spends is one the server does not get, so the path per request is: clone a
//! prepared request, one HMAC, write, read the whole answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::request::{DateHeader, Prepared, Signer};
use super::stats::Failure;
use super::target::{Connector, Stream};

const X_MS_DATE: HeaderName = HeaderName::from_static("x-ms-date");
const X_MS_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-ms-content-sha256");

/// A server's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A keep-alive connection that reconnects when the server closes it.
pub struct Client {
    connector: Arc<Connector>,
    signer: Arc<Signer>,
    sender: Option<SendRequest<Full<Bytes>>>,
    dates: DateHeader,
    timeout: Duration,
}

impl Client {
    pub fn new(connector: Arc<Connector>, signer: Arc<Signer>, timeout: Duration) -> Self {
        Self {
            connector,
            signer,
            sender: None,
            dates: DateHeader::new(),
            timeout,
        }
    }

    /// Opens the connection now rather than on the first request.
    pub async fn connect(&mut self) -> Result<(), Failure> {
        self.sender = Some(self.handshake().await?);
        Ok(())
    }

    async fn handshake(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = self
            .connector
            .connect()
            .await
            .map_err(|_| Failure::Connect)?;
        // The connection's I/O runs in its own task; the sender talks to it. When the server
        // closes the connection the task ends and the sender reports itself closed.
        let sender = match stream {
            Stream::Plain(tcp) => {
                let (sender, connection) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|_| Failure::Connect)?;
                tokio::spawn(connection);
                sender
            }
            Stream::Tls(tls) => {
                let (sender, connection) = http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|_| Failure::Connect)?;
                tokio::spawn(connection);
                sender
            }
        };
        Ok(sender)
    }

    /// A connection ready for a request: the current one, or a new one when the server has
    /// closed it (nothing was sent on it yet, so this is not a failure of any request).
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Failure> {
        let reusable = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            self.sender = Some(self.handshake().await?);
        }
        self.sender.as_mut().ok_or(Failure::Connect)
    }

    /// Signs `prepared` with a fresh `x-ms-date`, sends it and reads the whole answer.
    pub async fn send(&mut self, prepared: &Prepared) -> Result<Answer, Failure> {
        let date = self.dates.now();
        let mut request = Request::new(Full::new(prepared.body.clone()));
        *request.method_mut() = prepared.method.clone();
        *request.uri_mut() = prepared.uri.clone();
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.signer.host().clone());
        headers.insert(
            header::AUTHORIZATION,
            self.signer.authorization(prepared, &date),
        );
        headers.insert(X_MS_DATE, date);
        headers.insert(X_MS_CONTENT_SHA256, prepared.content_hash.clone());
        if let Some(content_type) = &prepared.content_type {
            headers.insert(header::CONTENT_TYPE, content_type.clone());
        }

        let timeout = self.timeout;
        let sender = self.ready().await?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|_| Failure::Io)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| Failure::Io)?
                .to_bytes();
            Ok(Answer { status, body })
        };
        let outcome = match tokio::time::timeout(timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Timeout),
        };
        if outcome.is_err() {
            // Whatever state the connection is in, it is not one to send the next request on.
            self.sender = None;
        }
        outcome
    }
}
