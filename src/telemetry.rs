//! Logging through `tracing`, as text or JSON. Secrets and tokens are never logged: request
//! lines carry method, path and status only, and key types redact themselves in `Debug`.

use std::io::{BufWriter, IsTerminal, stderr};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the subscriber. Lines are written to stderr by a thread of their own through a
/// buffer flushed whenever no line is waiting: at full load the access log is tens of
/// thousands of lines a second, and a `write` on the request's thread for each was 6% of the
/// server's CPU. Nothing is dropped (with the queue full, a request that logs waits) and the
/// returned guard flushes what is left when it is dropped, so keep it until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("callsign-log")
        .finish(BufWriter::new(stderr()));
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours for a person at a terminal, not for a file or a log collector.
        .with_ansi(stderr().is_terminal())
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}
