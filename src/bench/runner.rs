//! Drives the server: a fixed set of keep-alive connections, each with one worker sending
//! one request at a time for a warm-up and then a measured window, phase after phase.
//!
//! A request counts in the window it completes in. Each worker records into its own
//! [`Recorder`] and the phase merges them, so the hot loop shares nothing but two atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::task::JoinSet;

use super::client::Client;
use super::request::Prepared;
use super::stats::{Failure, Recorder};

/// Where each request of a phase comes from.
#[derive(Debug)]
pub enum Source {
    /// The same request every time.
    Fixed(Prepared),
    /// Round-robin over prepared requests; each worker starts at its own offset so that
    /// concurrent requests touch different rows.
    Cycle(Vec<Prepared>),
    /// Each prepared request once; the phase ends when they run out.
    Once {
        requests: Vec<Prepared>,
        next: AtomicUsize,
    },
}

impl Source {
    pub fn once(requests: Vec<Prepared>) -> Self {
        Source::Once {
            requests,
            next: AtomicUsize::new(0),
        }
    }

    fn first_cursor(&self, worker: usize, workers: usize) -> usize {
        match self {
            Source::Cycle(requests) => worker * requests.len() / workers.max(1),
            _ => 0,
        }
    }

    /// The next request for a worker whose position is `cursor`; `None` once a `Once`
    /// source is used up.
    pub fn next<'a>(&'a self, cursor: &mut usize) -> Option<&'a Prepared> {
        match self {
            Source::Fixed(request) => Some(request),
            Source::Cycle(requests) => {
                let request = requests.get(*cursor % requests.len().max(1))?;
                *cursor = (*cursor + 1) % requests.len();
                Some(request)
            }
            Source::Once { requests, next } => requests.get(next.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

/// The timeline of a phase, shared by its workers.
struct Clock {
    origin: Instant,
    measure_from: Instant,
    end: Instant,
    /// When a `Once` source ran out, in nanoseconds after `origin`; `u64::MAX` if it has not.
    exhausted_at: AtomicU64,
}

impl Clock {
    fn exhausted(&self) -> Option<Instant> {
        match self.exhausted_at.load(Ordering::Relaxed) {
            u64::MAX => None,
            nanos => Some(self.origin + Duration::from_nanos(nanos)),
        }
    }

    fn exhaust(&self, at: Instant) {
        let nanos =
            u64::try_from(at.duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX - 1);
        self.exhausted_at.fetch_min(nanos, Ordering::Relaxed);
    }

    /// The end of the measured window: the planned end, or when the source ran out.
    fn window_end(&self) -> Instant {
        self.exhausted().map_or(self.end, |at| at.min(self.end))
    }
}

/// What one phase measured.
pub struct Phase {
    /// Requests that completed within the window.
    pub measured: Recorder,
    /// Failures outside the window (warm-up, or completed after its end).
    pub outside: Recorder,
    pub window: Duration,
    /// Whether a `Once` source ran out before the planned end.
    pub exhausted: bool,
}

/// The connections, reused phase after phase.
pub struct Pool {
    clients: Vec<Client>,
}

impl Pool {
    /// Opens every connection before any phase, so no phase pays for handshakes.
    pub async fn connect(clients: Vec<Client>) -> anyhow::Result<Self> {
        let mut set = JoinSet::new();
        for mut client in clients {
            set.spawn(async move {
                let result = client.connect().await;
                (client, result)
            });
        }
        let mut clients = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (client, result) = joined.context("a connection task failed")?;
            if let Err(failure) = result {
                bail!("cannot connect to the server ({})", failure.key());
            }
            clients.push(client);
        }
        Ok(Self { clients })
    }

    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    /// Sends one request on the first connection (a probe).
    pub async fn send_one(&mut self, request: &Prepared) -> Result<super::client::Answer, Failure> {
        match self.clients.first_mut() {
            Some(client) => client.send(request).await,
            None => Err(Failure::Connect),
        }
    }

    /// Loads the server from every connection: `warmup`, then a measured `window`.
    ///
    /// Without `rate` each connection sends its next request as soon as the last is answered
    /// (closed loop: the most the server does at this concurrency). With `rate` (requests per
    /// second, over all connections) requests leave on a fixed schedule whatever the answers
    /// (open loop), and a latency counts from the moment its request was due — or, when its
    /// connection was free by then, from the moment it left (`Schedule::next_start`) — so a
    /// server that falls behind shows it in the latency instead of slowing the load down.
    pub async fn load(
        &mut self,
        source: Source,
        warmup: Duration,
        window: Duration,
        rate: Option<f64>,
    ) -> anyhow::Result<Phase> {
        let source = Arc::new(source);
        let origin = Instant::now();
        let clock = Arc::new(Clock {
            origin,
            measure_from: origin + warmup,
            end: origin + warmup + window,
            exhausted_at: AtomicU64::new(u64::MAX),
        });
        let workers = self.clients.len();
        let mut set = JoinSet::new();
        for (index, client) in self.clients.drain(..).enumerate() {
            let recorders = (Recorder::new()?, Recorder::new()?);
            let cursor = source.first_cursor(index, workers);
            // Each connection sends every `workers / rate` seconds, the connections evenly
            // staggered over that interval.
            let schedule = rate.filter(|r| *r > 0.0).map(|rate| {
                let interval = Duration::from_secs_f64(workers as f64 / rate);
                Schedule {
                    next: origin + interval.mul_f64(index as f64 / workers as f64),
                    interval,
                }
            });
            set.spawn(worker(
                client,
                source.clone(),
                clock.clone(),
                cursor,
                schedule,
                recorders,
            ));
        }
        let mut measured = Recorder::new()?;
        let mut outside = Recorder::new()?;
        while let Some(joined) = set.join_next().await {
            let (client, (m, o)) = joined.context("a load worker failed")?;
            measured.merge(&m);
            outside.merge(&o);
            self.clients.push(client);
        }
        let window_end = clock.window_end();
        Ok(Phase {
            measured,
            outside,
            window: window_end.saturating_duration_since(clock.measure_from),
            exhausted: clock.exhausted().is_some(),
        })
    }

    /// Sends every request once, spread over all connections, and returns the answers'
    /// bodies in the order of `requests`. Any unexpected answer fails the whole setup.
    pub async fn setup(&mut self, requests: Vec<Prepared>) -> anyhow::Result<Vec<Bytes>> {
        let total = requests.len();
        let requests = Arc::new(requests);
        let next = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        for mut client in self.clients.drain(..) {
            let requests = requests.clone();
            let next = next.clone();
            set.spawn(async move {
                let mut bodies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(index) else {
                        break;
                    };
                    let problem = match client.send(request).await {
                        Ok(answer) if answer.status == request.expected => {
                            bodies.push((index, answer.body));
                            continue;
                        }
                        Ok(answer) => format!(
                            "{} {} answered {}: {}",
                            request.method,
                            request.path_and_query(),
                            answer.status,
                            excerpt(&answer.body)
                        ),
                        Err(failure) => format!(
                            "{} {} failed: {}",
                            request.method,
                            request.path_and_query(),
                            failure.key()
                        ),
                    };
                    // Stop the other workers too.
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                    return (client, Err(problem));
                }
                (client, Ok(bodies))
            });
        }
        let mut bodies = Vec::with_capacity(total);
        let mut problem = None;
        while let Some(joined) = set.join_next().await {
            let (client, result) = joined.context("a setup worker failed")?;
            self.clients.push(client);
            match result {
                Ok(mut some) => bodies.append(&mut some),
                Err(p) => problem = problem.or(Some(p)),
            }
        }
        if let Some(problem) = problem {
            bail!("{problem}");
        }
        bodies.sort_unstable_by_key(|(index, _)| *index);
        Ok(bodies.into_iter().map(|(_, body)| body).collect())
    }
}

/// When an open-loop connection sends its next request.
struct Schedule {
    next: Instant,
    interval: Duration,
}

impl Schedule {
    /// Waits for the next request's turn and returns the moment its latency counts from.
    ///
    /// When the connection is free before the request is due, the request leaves when the
    /// timer fires, and its latency counts from then: tokio's timer has millisecond ticks,
    /// and on the 2-core build machine it fired 0.9–1 ms after the deadline at the median and
    /// up to 2.8 ms at p99 — the generator's delay, not the server's. When the request is
    /// already overdue (the answer to the last one came late) it leaves at once and its
    /// latency counts from when it was due, so a server that falls behind is still charged
    /// for the wait it caused (no coordinated omission).
    async fn next_start(&mut self) -> Instant {
        let due = self.next;
        self.next += self.interval;
        if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        }
    }
}

async fn worker(
    mut client: Client,
    source: Arc<Source>,
    clock: Arc<Clock>,
    mut cursor: usize,
    mut schedule: Option<Schedule>,
    (mut measured, mut outside): (Recorder, Recorder),
) -> (Client, (Recorder, Recorder)) {
    loop {
        let started = match &mut schedule {
            Some(schedule) => schedule.next_start().await,
            None => Instant::now(),
        };
        if started >= clock.end || clock.exhausted().is_some() {
            break;
        }
        let Some(request) = source.next(&mut cursor) else {
            clock.exhaust(started);
            break;
        };
        let outcome = client.send(request).await;
        let finished = Instant::now();
        let in_window = finished >= clock.measure_from && finished < clock.window_end();
        match outcome {
            Ok(answer) if answer.status == request.expected => {
                if in_window {
                    measured.success(finished - started);
                }
            }
            Ok(answer) => {
                let recorder = if in_window {
                    &mut measured
                } else {
                    &mut outside
                };
                recorder.failure(&Failure::Status(answer.status.as_u16()), || {
                    excerpt(&answer.body)
                });
            }
            Err(failure) => {
                let recorder = if in_window {
                    &mut measured
                } else {
                    &mut outside
                };
                recorder.failure(&failure, || "no answer".to_owned());
                if failure == Failure::Connect {
                    // The server is gone: do not spin on refused connections.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    (client, (measured, outside))
}

/// The start of a response body, for error messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, StatusCode};

    fn requests(n: usize) -> Vec<Prepared> {
        (0..n)
            .map(|i| {
                Prepared::empty(Method::GET, &format!("/r/{i}"), StatusCode::OK).expect("request")
            })
            .collect()
    }

    fn path(request: Option<&Prepared>) -> Option<String> {
        request.map(|r| r.path_and_query().to_owned())
    }

    #[test]
    fn a_once_source_hands_out_each_request_once_across_workers() {
        let source = Source::once(requests(3));
        let (mut a, mut b) = (source.first_cursor(0, 2), source.first_cursor(1, 2));
        let mut seen = vec![
            path(source.next(&mut a)),
            path(source.next(&mut b)),
            path(source.next(&mut a)),
        ];
        seen.sort();
        assert_eq!(
            seen,
            vec![
                Some("/r/0".into()),
                Some("/r/1".into()),
                Some("/r/2".into())
            ]
        );
        assert!(source.next(&mut b).is_none());
    }

    #[test]
    fn a_cycle_source_wraps_and_spreads_workers_apart() {
        let source = Source::Cycle(requests(4));
        let mut second = source.first_cursor(1, 2);
        assert_eq!(second, 2);
        let order: Vec<_> = (0..5).map(|_| path(source.next(&mut second))).collect();
        let expected: Vec<_> = [2, 3, 0, 1, 2]
            .iter()
            .map(|i| Some(format!("/r/{i}")))
            .collect();
        assert_eq!(order, expected);
    }

    #[tokio::test]
    async fn a_request_on_time_counts_from_when_it_left_and_a_late_one_from_when_it_was_due() {
        let interval = Duration::from_millis(50);
        let due = Instant::now() + Duration::from_millis(3);
        let mut on_time = Schedule {
            next: due,
            interval,
        };
        let started = on_time.next_start().await;
        assert!(
            started > due,
            "the timer fires after the deadline, and the latency counts from then"
        );
        assert_eq!(on_time.next, due + interval, "the schedule keeps its rate");

        let due = Instant::now() - Duration::from_millis(5);
        let mut overdue = Schedule {
            next: due,
            interval,
        };
        assert_eq!(overdue.next_start().await, due);
        assert_eq!(overdue.next, due + interval);
    }

    #[test]
    fn the_window_ends_early_when_the_source_runs_out() {
        let origin = Instant::now();
        let clock = Clock {
            origin,
            measure_from: origin + Duration::from_secs(1),
            end: origin + Duration::from_secs(3),
            exhausted_at: AtomicU64::new(u64::MAX),
        };
        assert_eq!(clock.window_end(), clock.end);
        clock.exhaust(origin + Duration::from_secs(2));
        clock.exhaust(origin + Duration::from_secs(5));
        assert_eq!(clock.window_end(), origin + Duration::from_secs(2));
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt(b"short"), "short");
        assert_eq!(excerpt(&[b'x'; 400]).chars().count(), 301);
    }
}
