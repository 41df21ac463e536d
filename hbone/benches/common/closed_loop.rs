//! What the in-process benchmarks share (`ambit-hbone`'s `round_trip`, and
//! `ambit-waypoint`'s `request`, which includes this file by path): exchanges one after
//! another, closed loop, on one current-thread runtime, so that the process' CPU time is
//! the whole cost; their latency p50 / p99 and CPU per exchange, printed with ratios to
//! the direct path.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// One path's exchanges.
#[derive(Debug)]
pub struct Figures {
    pub p50: Duration,
    pub p99: Duration,
    pub cpu_per_exchange: Duration,
}

/// Runs `bench` on a current-thread runtime: no other thread does any of its work.
pub fn block_on(bench: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(bench);
}

/// `warm_up` exchanges, then `count` timed ones; `exchange` is given each one's index.
pub async fn measure(
    warm_up: usize,
    count: usize,
    mut exchange: impl AsyncFnMut(usize),
) -> Figures {
    let mut latencies = Vec::with_capacity(count);
    let mut cpu_start = cpu_time();
    for i in 0..warm_up + count {
        if i == warm_up {
            cpu_start = cpu_time();
        }
        let start = Instant::now();
        exchange(i).await;
        if i >= warm_up {
            latencies.push(start.elapsed());
        }
    }
    let cpu = cpu_time() - cpu_start;
    latencies.sort_unstable();
    Figures {
        p50: latencies[count / 2],
        p99: latencies[count * 99 / 100],
        cpu_per_exchange: cpu / u32::try_from(count).expect("fits"),
    }
}

/// One row per `(path, figures)`, with ratios to the first, the direct path; `exchange`
/// names what one exchange is.
pub fn print_table(exchange: &str, rows: &[(&str, &Figures)]) {
    let Some((_, direct)) = rows.first() else {
        return;
    };
    println!("path       p50 µs          p99 µs          CPU µs per {exchange}");
    for (name, figures) in rows {
        let cells = [
            (figures.p50, direct.p50),
            (figures.p99, direct.p99),
            (figures.cpu_per_exchange, direct.cpu_per_exchange),
        ]
        .map(|(value, direct)| {
            format!(
                "{:>6.1} ({:.2}x)",
                micros(value),
                value.as_secs_f64() / direct.as_secs_f64()
            )
        });
        println!("{name:<10} {}", cells.join("  "));
    }
}

pub fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// CPU time (user and system) of the main thread, from `/proc/self/schedstat`: on a
/// current-thread runtime that is all the work of the process.
fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/self/schedstat").expect("read schedstat");
    let nanos = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat's first field");
    Duration::from_nanos(nanos)
}
