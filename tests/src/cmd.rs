//! Running external commands (`ip`, CNI plugins) with errors that name the command, its
//! exit status and what it printed.

use std::{
    fmt,
    io::{Read, Write},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// A command that ran to the end (or was killed at its deadline).
#[derive(Debug, Clone)]
pub struct Finished {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// `self` when the command exited 0, otherwise an error with status and output.
    ///
    /// # Errors
    /// When the exit status is not success.
    pub fn success(self) -> Result<Self> {
        if self.status.success() {
            Ok(self)
        } else {
            bail!("{self}")
        }
    }

    /// stdout parsed as one JSON value.
    ///
    /// # Errors
    /// When stdout is not JSON; the error shows stdout and stderr.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(self.stdout.trim())
            .with_context(|| format!("expected JSON on stdout of {self}"))
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` exited with {}", self.command, self.status)?;
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let text = text.trim_end();
            if !text.is_empty() {
                write!(f, "\n--- {name} ---\n{text}")?;
            }
        }
        Ok(())
    }
}

/// The command line of `command`, quoted where needed, for messages.
#[must_use]
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| {
            let part = part.to_string_lossy();
            if part.is_empty() || part.contains(|c: char| c.is_whitespace() || c == '"') {
                format!("{part:?}")
            } else {
                part.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` to the end and fails unless it exits 0.
///
/// # Errors
/// When it cannot start or exits non-zero (the error has its stderr).
pub fn run(command: &mut Command) -> Result<Finished> {
    let line = describe(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}` — is it installed and on PATH?"))?;
    Finished {
        command: line,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
    .success()
}

/// Runs `ip ARGS…` and fails unless it exits 0.
///
/// # Errors
/// As [`run`].
pub fn ip(args: &[&str]) -> Result<Finished> {
    run(Command::new("ip").args(args))
}

/// Runs `command` with `stdin` as its input, killing it if it has not exited within
/// `timeout`. Returns whatever the exit status; only a start failure or the timeout is
/// an error.
///
/// # Errors
/// When the command cannot start or does not finish in time.
pub fn run_with_input(command: &mut Command, stdin: &[u8], timeout: Duration) -> Result<Finished> {
    let line = describe(command);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let input = stdin.to_vec();
    let mut child_stdin = child.stdin.take().context("child stdin")?;
    // A plugin may exit without reading its input: a broken pipe here is not an error.
    let writer = thread::spawn(move || {
        let _ = child_stdin.write_all(&input);
    });
    let stdout = read_in_background(child.stdout.take().context("child stdout")?);
    let stderr = read_in_background(child.stderr.take().context("child stderr")?);

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{line}`"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait();
            let stderr = stderr
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            bail!(
                "`{line}` did not exit within {timeout:?} (killed, {status:?}); stderr so far:\n{stderr}"
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    // A grandchild that inherited the pipes could keep them open forever.
    let collect = |rx: mpsc::Receiver<String>, name: &str| {
        rx.recv_timeout(Duration::from_secs(5)).with_context(|| {
            format!("`{line}` exited but its {name} stayed open (a child process holds it?)")
        })
    };
    Ok(Finished {
        stdout: collect(stdout, "stdout")?,
        stderr: collect(stderr, "stderr")?,
        command: line,
        status,
    })
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_reports_its_line_status_and_stderr() {
        let error = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("sh -c \"echo oops >&2; exit 3\"")
                && text.contains("exit status: 3")
                && text.contains("oops"),
            "{text}"
        );
    }

    #[test]
    fn input_is_passed_and_a_hung_command_times_out() {
        let done =
            run_with_input(&mut Command::new("cat"), b"abc", Duration::from_secs(5)).unwrap();
        assert_eq!(done.stdout, "abc");
        let error = run_with_input(
            Command::new("sleep").arg("10"),
            b"",
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(error.to_string().contains("did not exit within"), "{error}");
    }
}
