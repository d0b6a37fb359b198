//! The result of a run, as a table for people and as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::runner::Phase;
use super::stats::{Latency, ratio};

/// The machine the run was made on: on a shared machine, figures mean little without it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// Cores this process may use.
    pub cores: usize,
    /// The CPU model, from /proc/cpuinfo.
    pub cpu: Option<String>,
    /// The operating system, from /etc/os-release.
    pub os: Option<String>,
    /// The 1, 5 and 15 minute load averages when the run started, from /proc/loadavg.
    pub load_average: Option<String>,
}

impl Machine {
    pub fn probe() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: read("/proc/cpuinfo").and_then(|info| field(&info, "model name", ':')),
            os: read("/etc/os-release")
                .and_then(|info| field(&info, "PRETTY_NAME", '='))
                .map(|v| v.trim_matches('"').to_owned()),
            load_average: read("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
        }
    }
}

/// The value of the first `name<sep>value` line.
fn field(text: &str, name: &str, separator: char) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(separator)?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

/// How the run was made.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSettings {
    pub endpoint: String,
    pub connections: usize,
    pub duration_seconds: f64,
    pub warmup_seconds: f64,
    pub threads: usize,
}

/// One measured operation (or the ceiling).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationReport {
    pub operation: String,
    /// False when the server does not have the route (it answered 404 to a probe).
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Requests answered as expected within the measured window.
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    /// `requests_per_second` over the ceiling's.
    pub ratio_to_ceiling: Option<f64>,
    pub latency_ms: Option<Latency>,
    /// Failed requests within the window, by status code or `connect`, `io`, `timeout`.
    pub errors: BTreeMap<String, u64>,
    /// Failed requests outside the window (warm-up, or completed after it), likewise.
    pub errors_outside_window: BTreeMap<String, u64>,
    /// The first failure's status and the start of its body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_error: Option<String>,
}

impl OperationReport {
    pub fn measured(operation: &str, phase: &Phase, ceiling: Option<f64>) -> Self {
        let summary = phase.measured.summarize(phase.window);
        let note = phase.exhausted.then(|| {
            format!(
                "ran out of prepared requests after {:.1} s of measurement (raise --max-prepared)",
                phase.window.as_secs_f64()
            )
        });
        Self {
            operation: operation.to_owned(),
            available: true,
            note,
            requests: summary.ok,
            seconds: summary.seconds,
            requests_per_second: summary.throughput,
            ratio_to_ceiling: ceiling.and_then(|c| ratio(summary.throughput, c)),
            latency_ms: summary.latency_ms,
            errors: phase.measured.errors().clone(),
            errors_outside_window: phase.outside.errors().clone(),
            sample_error: phase
                .measured
                .sample_error()
                .or(phase.outside.sample_error())
                .map(str::to_owned),
        }
    }

    pub fn unavailable(operation: &str) -> Self {
        Self {
            operation: operation.to_owned(),
            available: false,
            note: Some("not available on this server (404)".to_owned()),
            requests: 0,
            seconds: 0.0,
            requests_per_second: 0.0,
            ratio_to_ceiling: None,
            latency_ms: None,
            errors: BTreeMap::new(),
            errors_outside_window: BTreeMap::new(),
            sample_error: None,
        }
    }

    /// Every failed request, in the window or not.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.errors_outside_window.values().sum::<u64>()
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub machine: Machine,
    pub settings: RunSettings,
    /// `GET /healthz` under the same load: what this server, on this machine, at this moment,
    /// answers when an operation costs nothing.
    pub ceiling: OperationReport,
    pub operations: Vec<OperationReport>,
}

impl Report {
    /// Failed requests over the whole run, ceiling included.
    pub fn error_count(&self) -> u64 {
        self.ceiling.error_count()
            + self
                .operations
                .iter()
                .map(OperationReport::error_count)
                .sum::<u64>()
    }

    /// The report as an aligned text table, with a line per failure kind below it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "operation", "req/s", "×ceiling", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
        let mut failures = Vec::new();
        for (index, op) in std::iter::once(&self.ceiling)
            .chain(&self.operations)
            .enumerate()
        {
            let name = if index == 0 {
                format!("{} (ceiling)", op.operation)
            } else {
                op.operation.clone()
            };
            if !op.available {
                let _ = writeln!(
                    out,
                    "{name:<28} {}",
                    op.note.as_deref().unwrap_or("not available")
                );
                continue;
            }
            let ratio = op
                .ratio_to_ceiling
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
            let latency = |pick: fn(&Latency) -> f64| {
                op.latency_ms
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |l| format!("{:.2}", pick(l)))
            };
            let _ = writeln!(
                out,
                "{name:<28} {:>9.0} {ratio:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
                op.requests_per_second,
                latency(|l| l.p50),
                latency(|l| l.p90),
                latency(|l| l.p99),
                latency(|l| l.max),
                op.error_count(),
            );
            if op.error_count() > 0 {
                let kinds: Vec<String> = merged(&op.errors, &op.errors_outside_window)
                    .iter()
                    .map(|(k, n)| format!("{k}×{n}"))
                    .collect();
                failures.push(format!(
                    "  {}: {} (first: {})",
                    op.operation,
                    kinds.join(", "),
                    op.sample_error.as_deref().unwrap_or("?")
                ));
            }
            if let Some(note) = &op.note {
                failures.push(format!("  {}: {note}", op.operation));
            }
        }
        for line in failures {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

fn merged(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut all = a.clone();
    for (key, count) in b {
        *all.entry(key.clone()).or_default() += count;
    }
    all
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::stats::{Failure, Recorder};

    fn phase(latencies_ms: &[u64], failures: &[u16], window_s: u64) -> Phase {
        let mut measured = Recorder::new().expect("recorder");
        for ms in latencies_ms {
            measured.success(Duration::from_millis(*ms));
        }
        for status in failures {
            measured.failure(&Failure::Status(*status), || "{\"error\":{}}".into());
        }
        Phase {
            measured,
            outside: Recorder::new().expect("recorder"),
            window: Duration::from_secs(window_s),
            exhausted: false,
        }
    }

    fn report() -> Report {
        let ceiling = OperationReport::measured("healthz", &phase(&[1; 400], &[], 2), None);
        let rate = ceiling.requests_per_second;
        Report {
            machine: Machine {
                cores: 2,
                cpu: Some("Test CPU".into()),
                os: None,
                load_average: None,
            },
            settings: RunSettings {
                endpoint: "https://127.0.0.1:8443/".into(),
                connections: 4,
                duration_seconds: 2.0,
                warmup_seconds: 0.5,
                threads: 1,
            },
            operations: vec![
                OperationReport::measured("issue-token", &phase(&[2; 100], &[], 2), Some(rate)),
                OperationReport::unavailable("audit-query"),
                OperationReport::measured("revoke", &phase(&[3; 10], &[503, 503], 2), Some(rate)),
            ],
            ceiling,
        }
    }

    #[test]
    fn operations_are_reported_as_a_ratio_to_the_ceiling() {
        let report = report();
        assert_eq!(report.ceiling.requests_per_second, 200.0);
        assert_eq!(report.operations[0].requests_per_second, 50.0);
        assert_eq!(report.operations[0].ratio_to_ceiling, Some(0.25));
        assert_eq!(report.error_count(), 2);
    }

    #[test]
    fn the_table_names_the_ceiling_missing_routes_and_failures() {
        let table = report().table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("operation"), "{table}");
        assert!(lines[1].starts_with("healthz (ceiling)"), "{table}");
        assert!(lines[1].contains("200"), "{table}");
        assert!(
            lines[2].starts_with("issue-token") && lines[2].contains("0.25"),
            "{table}"
        );
        assert!(lines[2].contains("2.00"), "p50 of 2 ms: {table}");
        assert!(lines[3].contains("not available on this server"), "{table}");
        assert!(
            lines[4].starts_with("revoke") && lines[4].trim_end().ends_with('2'),
            "{table}"
        );
        assert!(table.contains("revoke: 503×2"), "{table}");
    }

    #[test]
    fn json_has_the_figures_scripts_read() {
        let json = serde_json::to_value(report()).expect("json");
        assert_eq!(json["ceiling"]["requestsPerSecond"], 200.0);
        let issue = &json["operations"][0];
        assert_eq!(issue["operation"], "issue-token");
        assert_eq!(issue["ratioToCeiling"], 0.25);
        assert_eq!(issue["latencyMs"]["p99"], 2.0);
        assert_eq!(json["operations"][1]["available"], false);
        assert_eq!(json["operations"][2]["errors"]["503"], 2);
        assert_eq!(json["machine"]["cores"], 2);
    }

    #[test]
    fn proc_style_fields_are_read() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags : x\n";
        assert_eq!(
            field(info, "model name", ':').as_deref(),
            Some("AMD EPYC 7B13")
        );
        let os = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            field(os, "PRETTY_NAME", '=').as_deref(),
            Some("\"Debian GNU/Linux 12 (bookworm)\"")
        );
    }
}
