//! What a load phase records per request, and the figures it boils down to.
//!
//! Latencies go into an HDR histogram (microseconds, 3 significant digits): recording is a
//! few nanoseconds and constant memory whatever the request count, and per-connection
//! histograms merge exactly, so each worker records without sharing anything and the phase
//! adds them up at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency the histogram tells apart (longer ones are recorded as this): 60 s.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// Why a request did not get the answer its operation expects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// The server answered with another status.
    Status(u16),
    /// No connection could be made.
    Connect,
    /// The connection broke (reset, closed, malformed answer).
    Io,
    /// No answer within the request timeout.
    Timeout,
}

impl Failure {
    /// The key this failure is counted under in reports: the status code, or a word.
    pub fn key(&self) -> String {
        match self {
            Failure::Status(status) => status.to_string(),
            Failure::Connect => "connect".to_owned(),
            Failure::Io => "io".to_owned(),
            Failure::Timeout => "timeout".to_owned(),
        }
    }
}

/// One worker's record of one phase.
#[derive(Debug, Clone)]
pub struct Recorder {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// The first unexpected answer, to show why an operation fails.
    sample_error: Option<String>,
}

impl Recorder {
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Self {
            latencies: Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)?,
            errors: BTreeMap::new(),
            sample_error: None,
        })
    }

    /// A request that got the expected answer after `latency`.
    pub fn success(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latencies
            .saturating_record(micros.clamp(1, MAX_LATENCY_MICROS));
    }

    /// A request that failed; `detail` (e.g. the response body) is kept for the first one.
    pub fn failure(&mut self, failure: &Failure, detail: impl FnOnce() -> String) {
        *self.errors.entry(failure.key()).or_default() += 1;
        if self.sample_error.is_none() {
            self.sample_error = Some(format!("{}: {}", failure.key(), detail()));
        }
    }

    pub fn successes(&self) -> u64 {
        self.latencies.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    pub fn sample_error(&self) -> Option<&str> {
        self.sample_error.as_deref()
    }

    /// Adds another worker's record to this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latencies.add(&other.latencies);
        for (key, count) in &other.errors {
            *self.errors.entry(key.clone()).or_default() += count;
        }
        if self.sample_error.is_none() {
            self.sample_error.clone_from(&other.sample_error);
        }
    }

    /// The figures of a phase whose measured window lasted `window`.
    pub fn summarize(&self, window: Duration) -> Summary {
        let seconds = window.as_secs_f64();
        let ok = self.successes();
        let latency = (ok > 0).then(|| {
            let ms = |micros: u64| micros as f64 / 1000.0;
            Latency {
                mean: self.latencies.mean() / 1000.0,
                p50: ms(self.latencies.value_at_quantile(0.50)),
                p90: ms(self.latencies.value_at_quantile(0.90)),
                p99: ms(self.latencies.value_at_quantile(0.99)),
                max: ms(self.latencies.max()),
            }
        });
        Summary {
            ok,
            errors: self.error_count(),
            seconds,
            throughput: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            latency_ms: latency,
        }
    }
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// A phase's measured figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Requests answered as expected within the window.
    pub ok: u64,
    /// Requests that failed within the window.
    pub errors: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Expected answers per second.
    pub throughput: f64,
    /// Latency of the expected answers; absent when there were none.
    pub latency_ms: Option<Latency>,
}

/// `throughput` as a fraction of the ceiling's; absent when the ceiling measured nothing.
pub fn ratio(throughput: f64, ceiling: f64) -> Option<f64> {
    (ceiling > 0.0).then(|| throughput / ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Recorder {
        Recorder::new().expect("histogram bounds")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quantiles_and_throughput_of_known_latencies() {
        let mut recorder = rec();
        for i in 1..=100 {
            recorder.success(ms(i));
        }
        let summary = recorder.summarize(Duration::from_secs(2));
        assert_eq!(summary.ok, 100);
        assert_eq!(summary.errors, 0);
        assert!((summary.throughput - 50.0).abs() < 1e-9);
        let latency = summary.latency_ms.expect("latency");
        // 3 significant digits: within 0.1% of the exact value.
        let close = |actual: f64, expected: f64| (actual - expected).abs() <= expected * 0.001;
        assert!(close(latency.p50, 50.0), "{latency:?}");
        assert!(close(latency.p90, 90.0), "{latency:?}");
        assert!(close(latency.p99, 99.0), "{latency:?}");
        assert!(close(latency.max, 100.0), "{latency:?}");
        assert!(close(latency.mean, 50.5), "{latency:?}");
    }

    #[test]
    fn failures_are_counted_by_key_and_the_first_is_kept() {
        let mut recorder = rec();
        recorder.failure(&Failure::Status(500), || "first".into());
        recorder.failure(&Failure::Status(500), || "second".into());
        recorder.failure(&Failure::Timeout, || "slow".into());
        recorder.failure(&Failure::Io, String::new);
        recorder.failure(&Failure::Connect, String::new);
        assert_eq!(recorder.error_count(), 5);
        assert_eq!(recorder.errors()["500"], 2);
        assert_eq!(recorder.errors()["timeout"], 1);
        assert_eq!(recorder.errors()["io"], 1);
        assert_eq!(recorder.errors()["connect"], 1);
        assert_eq!(recorder.sample_error(), Some("500: first"));
        let summary = recorder.summarize(Duration::from_secs(1));
        assert_eq!((summary.ok, summary.errors), (0, 5));
        assert_eq!(summary.latency_ms, None);
    }

    #[test]
    fn merged_recorders_equal_one_that_saw_everything() {
        let (mut a, mut b, mut all) = (rec(), rec(), rec());
        for i in 1..=50 {
            a.success(ms(i));
            all.success(ms(i));
        }
        for i in 51..=100 {
            b.success(ms(i));
            all.success(ms(i));
        }
        b.failure(&Failure::Status(503), || "busy".into());
        all.failure(&Failure::Status(503), || "busy".into());
        a.merge(&b);
        let window = Duration::from_secs(1);
        assert_eq!(a.summarize(window), all.summarize(window));
        assert_eq!(a.sample_error(), Some("503: busy"));
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut recorder = rec();
        recorder.success(Duration::ZERO);
        recorder.success(Duration::from_secs(3600));
        let latency = recorder
            .summarize(Duration::from_secs(1))
            .latency_ms
            .expect("latency");
        assert_eq!(recorder.successes(), 2);
        assert!(
            latency.max >= 59_000.0 && latency.max <= 60_100.0,
            "{latency:?}"
        );
    }

    #[test]
    fn a_zero_window_or_ceiling_gives_no_rate() {
        let mut recorder = rec();
        recorder.success(ms(1));
        assert_eq!(recorder.summarize(Duration::ZERO).throughput, 0.0);
        assert_eq!(ratio(10.0, 0.0), None);
        assert_eq!(ratio(10.0, 40.0), Some(0.25));
    }
}
