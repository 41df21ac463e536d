//! Processes started inside a node or a pod: entering the network namespace and the
//! cgroup between `fork` and `exec`, logs captured to files, and kill-on-drop.
//!
//! Every process is registered with its [`crate::TestNet`], which stops whatever is
//! still running when the test ends, so a leaked [`ChildGuard`] does not leak a process.
#![expect(
    unsafe_code,
    reason = "pre_exec (setns, joining a cgroup) and kill(2) need it"
)]

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};

use crate::{
    cmd::{self, Finished},
    wait::wait_for,
};

/// How long a process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Where a process runs: a network namespace and a cgroup.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    /// For log file names and messages: `node1` or `node1-client`.
    pub label: String,
    pub netns: PathBuf,
    pub cgroup: PathBuf,
    /// The pod (its netns name) whose removal stops this process, if any.
    pub pod: Option<String>,
}

/// Arranges for `command`'s child to join `cgroup` (when given) and then enter the
/// network namespace `netns`, after `fork` and before `exec`.
///
/// The files are opened here, in the parent; the child only calls `write(2)` and
/// `setns(2)`, which are async-signal-safe.
pub(crate) fn enter_in_child(
    command: &mut Command,
    netns: &Path,
    cgroup: Option<&Path>,
) -> Result<()> {
    let netns_fd: OwnedFd = File::open(netns)
        .with_context(|| format!("cannot open network namespace {}", netns.display()))?
        .into();
    let procs_fd: Option<OwnedFd> = cgroup
        .map(|cgroup| {
            let procs = cgroup.join("cgroup.procs");
            OpenOptions::new()
                .write(true)
                .open(&procs)
                .with_context(|| format!("cannot open {} for writing", procs.display()))
        })
        .transpose()?
        .map(Into::into);
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe system calls write(2) and setns(2) on fds that stay open (they
    // are owned by the closure, which the Command keeps alive); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if let Some(procs) = &procs_fd {
                // "0" means the writing process itself.
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setns(netns_fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// A process the test started. Dropping it stops the process (SIGTERM, then SIGKILL
/// after [`STOP_GRACE`]) and reaps it.
#[derive(Debug)]
pub struct ChildGuard {
    slot: Arc<ChildSlot>,
}

/// The shared half of a [`ChildGuard`], also held by the test's registry.
#[derive(Debug)]
pub(crate) struct ChildSlot {
    label: String,
    command: String,
    pid: u32,
    pub(crate) pod: Option<String>,
    stdout: PathBuf,
    stderr: PathBuf,
    /// The process, until it has been reaped. Signals are only sent while holding this
    /// lock and before reaping, so they cannot reach a recycled pid.
    state: Mutex<ChildState>,
}

#[derive(Debug)]
struct ChildState {
    child: Child,
    status: Option<ExitStatus>,
}

/// Starts `command` at `place` with stdout and stderr going to files in `log_dir`.
pub(crate) fn spawn(
    place: &Location,
    command: &mut Command,
    log_dir: &Path,
    seq: u64,
) -> Result<ChildGuard> {
    let line = cmd::describe(command);
    let program = Path::new(command.get_program()).file_name().map_or_else(
        || "process".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    let label = format!("{}-{program}-{seq}", place.label);
    let stdout_path = log_dir.join(format!("{label}.stdout"));
    let stderr_path = log_dir.join(format!("{label}.stderr"));
    let create = |path: &Path| {
        File::create(path).with_context(|| format!("cannot create log file {}", path.display()))
    };
    command
        .stdin(Stdio::null())
        .stdout(create(&stdout_path)?)
        .stderr(create(&stderr_path)?);
    enter_in_child(command, &place.netns, Some(&place.cgroup))?;
    let child = command.spawn().with_context(|| {
        format!(
            "cannot start `{line}` in {} (netns {}, cgroup {})",
            place.label,
            place.netns.display(),
            place.cgroup.display()
        )
    })?;
    Ok(ChildGuard {
        slot: Arc::new(ChildSlot {
            label,
            command: line,
            pid: child.id(),
            pod: place.pod.clone(),
            stdout: stdout_path,
            stderr: stderr_path,
            state: Mutex::new(ChildState {
                child,
                status: None,
            }),
        }),
    })
}

impl ChildGuard {
    pub(crate) fn slot(&self) -> Arc<ChildSlot> {
        Arc::clone(&self.slot)
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.slot.pid
    }

    /// `<node>[-<pod>]-<program>-<n>`: names the log files and appears in messages.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.slot.label
    }

    /// The file the process's stdout goes to.
    #[must_use]
    pub fn stdout_path(&self) -> &Path {
        &self.slot.stdout
    }

    /// The file the process's stderr goes to.
    #[must_use]
    pub fn stderr_path(&self) -> &Path {
        &self.slot.stderr
    }

    /// Everything the process has written to stdout so far.
    #[must_use]
    pub fn stdout(&self) -> String {
        read_lossy(&self.slot.stdout)
    }

    /// Everything the process has written to stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        read_lossy(&self.slot.stderr)
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    ///
    /// # Errors
    /// When `waitpid` fails.
    pub fn try_status(&self) -> Result<Option<ExitStatus>> {
        self.slot.try_status()
    }

    /// Waits for a line on stdout or stderr that satisfies `matches` and returns it.
    /// Fails at once if the process exits first, or after `timeout`; either error
    /// quotes the end of both logs.
    ///
    /// # Errors
    /// See above.
    pub fn wait_for_log_line(
        &self,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.wait_for_line("a matching log line", timeout, matches)
    }

    /// Waits for a line containing `needle` on stdout or stderr (as
    /// [`ChildGuard::wait_for_log_line`]).
    ///
    /// # Errors
    /// See [`ChildGuard::wait_for_log_line`].
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for_line(
            &format!("a log line containing {needle:?}"),
            timeout,
            |line| line.contains(needle),
        )
    }

    fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let found = wait_for(&format!("{what} from {}", self.slot.label), timeout, || {
            let found = [&self.slot.stdout, &self.slot.stderr]
                .into_iter()
                .find_map(|path| {
                    read_lossy(path)
                        .lines()
                        .find(|line| matches(line))
                        .map(str::to_owned)
                });
            if found.is_some() {
                return Ok(found);
            }
            match self.slot.try_status() {
                Ok(Some(status)) => Err(ExitedEarly(status)),
                _ => Ok(None),
            }
        });
        found.map_err(|error| anyhow!("{error}\n{}", self.slot.log_tail(40)))
    }

    /// Waits for the process to exit by itself and returns its status.
    ///
    /// # Errors
    /// After `timeout` (the process keeps running; dropping the guard stops it).
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        wait_for(&format!("{} to exit", self.slot.label), timeout, || {
            self.slot.try_status()
        })
        .map_err(|error| anyhow!("{error}\n{}", self.slot.log_tail(40)))
    }

    /// Waits for the process to exit by itself and returns its status and output.
    ///
    /// # Errors
    /// As [`ChildGuard::wait_exit`].
    pub fn finish(&self, timeout: Duration) -> Result<Finished> {
        let status = self.wait_exit(timeout)?;
        Ok(Finished {
            command: self.slot.command.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        })
    }

    /// Stops the process gracefully: SIGTERM, SIGKILL after [`STOP_GRACE`]. Returns the
    /// exit status (the recorded one if it had already exited).
    ///
    /// # Errors
    /// When signalling or waiting fails.
    pub fn stop(&self) -> Result<ExitStatus> {
        self.stop_within(STOP_GRACE)
    }

    /// Stops the process gracefully, giving it `grace` between SIGTERM and SIGKILL: for
    /// a process whose own shutdown (a drain) may take longer than [`STOP_GRACE`].
    ///
    /// # Errors
    /// When signalling or waiting fails.
    pub fn stop_within(&self, grace: Duration) -> Result<ExitStatus> {
        self.slot.signal(libc::SIGTERM)?;
        Ok(self.slot.wait_or_kill(Instant::now() + grace)?.0)
    }

    /// Kills the process (SIGKILL) and reaps it.
    ///
    /// # Errors
    /// When signalling or waiting fails.
    pub fn kill(&self) -> Result<ExitStatus> {
        Ok(self.slot.wait_or_kill(Instant::now())?.0)
    }

    /// Sends `signal` (a `libc::SIG*` number) if the process still runs.
    ///
    /// # Errors
    /// When kill(2) fails.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.slot.signal(signal)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("ambit-e2e: cannot stop {}: {error:#}", self.slot.label);
        }
    }
}

/// A probe error: the process is gone, so waiting longer is pointless.
#[derive(Debug)]
struct ExitedEarly(ExitStatus);

impl std::fmt::Display for ExitedEarly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the process exited first, with {}", self.0)
    }
}

impl ChildSlot {
    fn lock(&self) -> MutexGuard<'_, ChildState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn try_status(&self) -> Result<Option<ExitStatus>> {
        let mut state = self.lock();
        state
            .try_status()
            .with_context(|| format!("waitpid on {} (pid {})", self.label, self.pid))
    }

    pub(crate) fn signal(&self, signal: i32) -> Result<()> {
        let mut state = self.lock();
        if state.try_status()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid).context("pid out of range")?;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped
        // child (checked under the lock that guards reaping), so it is not recycled.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("kill({pid}, {signal}) for {}", self.label));
        }
        Ok(())
    }

    /// Waits until `deadline` for the process to exit, then SIGKILLs and reaps it.
    /// The flag says whether it had to be killed.
    pub(crate) fn wait_or_kill(&self, deadline: Instant) -> Result<(ExitStatus, bool)> {
        loop {
            {
                let mut state = self.lock();
                if let Some(status) = state.try_status()? {
                    return Ok((status, false));
                }
                if Instant::now() >= deadline {
                    state
                        .child
                        .kill()
                        .with_context(|| format!("SIGKILL {}", self.label))?;
                    let status = state
                        .child
                        .wait()
                        .with_context(|| format!("waitpid on {}", self.label))?;
                    state.status = Some(status);
                    return Ok((status, true));
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last `lines` lines of stdout and stderr, for failure messages.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let tail = |path: &Path| {
            let text = read_lossy(path);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "--- {} stdout ({}) ---\n{}\n--- {} stderr ({}) ---\n{}",
            self.label,
            self.stdout.display(),
            tail(&self.stdout),
            self.label,
            self.stderr.display(),
            tail(&self.stderr)
        )
    }
}

impl ChildState {
    fn try_status(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }
}

/// Stops all of `slots` together: SIGTERM to each, one shared grace period, SIGKILL for
/// the rest. Problems are logged, not returned (this runs during cleanup).
pub(crate) fn stop_all(slots: &[Arc<ChildSlot>]) {
    for slot in slots {
        if let Err(error) = slot.signal(libc::SIGTERM) {
            eprintln!("ambit-e2e cleanup: {error:#}");
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for slot in slots {
        match slot.wait_or_kill(deadline) {
            Ok((_, true)) => {
                eprintln!(
                    "ambit-e2e cleanup: {} ignored SIGTERM for {STOP_GRACE:?} and was killed",
                    slot.label
                );
            }
            Ok((_, false)) => {}
            Err(error) => eprintln!("ambit-e2e cleanup: cannot stop {}: {error:#}", slot.label),
        }
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
