//! Every binary's log set-up: one line per event on stdout, filtered by `RUST_LOG`.
//!
//! `RUST_LOG` is a comma-separated list of `target=level` directives and a bare default
//! level (`info`, `ambit_waypoint=debug`, `warn,ambit_ztunnel::inpod=trace`): what
//! tracing-subscriber's `filter::Targets` reads. Span and field filters
//! (`[span{field=value}]`) are not supported: they need `EnvFilter` and its regex
//! engine, which would cost every binary, ztunnel included, a few hundred KiB of
//! resident code. Unset or empty, the level is `info`.

use tracing::{Level, warn};
use tracing_subscriber::{
    filter::Targets, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// The variable the filter is read from.
pub const FILTER_VARIABLE: &str = "RUST_LOG";

/// Installs the process's logger. A `RUST_LOG` that does not parse is reported (once the
/// logger is up) and `info` is used instead, so a typo never silences a proxy.
///
/// # Panics
/// A logger is already installed.
pub fn init() {
    let (filter, problem) = filter(std::env::var(FILTER_VARIABLE).ok().as_deref());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(filter)
        .init();
    if let Some(problem) = problem {
        warn!("{problem}");
    }
}

/// The filter `spec` asks for, or `info` and why `spec` was not used.
fn filter(spec: Option<&str>) -> (Targets, Option<String>) {
    let default = Targets::new().with_default(Level::INFO);
    match spec.map(str::trim) {
        None | Some("") => (default, None),
        Some(spec) => match spec.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(error) => (
                default,
                Some(format!(
                    "{FILTER_VARIABLE}={spec:?} is not a list of `target=level` directives ({error}); logging at info"
                )),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn reads_targets_and_falls_back_to_info() {
        let (targets, problem) = filter(Some("warn,ambit_ztunnel::inpod=trace"));
        assert!(problem.is_none());
        assert!(targets.would_enable("ambit_ztunnel::inpod", &Level::TRACE));
        assert!(!targets.would_enable("ambit_ztunnel::admin", &Level::INFO));
        assert!(targets.would_enable("h2", &Level::WARN));

        for unset in [None, Some(""), Some("  ")] {
            let (targets, problem) = filter(unset);
            assert!(problem.is_none());
            assert!(targets.would_enable("anything", &Level::INFO));
            assert!(!targets.would_enable("anything", &Level::DEBUG));
        }

        let (targets, problem) = filter(Some("ambit=loud"));
        assert!(problem.unwrap().contains("RUST_LOG=\"ambit=loud\""));
        assert!(targets.would_enable("anything", &Level::INFO));
    }
}
