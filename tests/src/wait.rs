//! Polling with a deadline, for conditions no event announces.

use std::{
    fmt::Display,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

/// Polls `condition` until it holds, failing after `timeout` with a message naming
/// `what` was awaited.
///
/// # Errors
/// When `timeout` passes first.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<()> {
    wait_for(what, timeout, || -> Result<Option<()>, &str> {
        Ok(condition().then_some(()))
    })
}

/// Polls `probe` until it returns `Ok(Some(value))`. `Ok(None)` and `Err` both mean
/// "not yet"; the last error is quoted if `timeout` passes first.
///
/// # Errors
/// When `timeout` passes first.
pub fn wait_for<T, E: Display>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>, E>,
) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    let mut last_error: Option<String>;
    loop {
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => last_error = None,
            Err(error) => last_error = Some(error.to_string()),
        }
        if start.elapsed() >= timeout {
            match last_error {
                Some(error) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {error}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_names_what_was_awaited_and_the_last_error() {
        let error = wait_for("the answer", Duration::from_millis(20), || {
            Err::<Option<()>, _>("not 42")
        })
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("waiting for the answer") && text.contains("not 42"),
            "{text}"
        );
        let mut n = 0;
        wait_until("three tries", Duration::from_secs(5), || {
            n += 1;
            n == 3
        })
        .unwrap();
    }
}
