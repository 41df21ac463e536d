//! Each run's record in [`RUNS_DIR`], so `--down` can remove what a killed run (Ctrl-C
//! during `--keep`, a crash) left behind: its processes, network namespaces and links,
//! cgroups, bpffs pins and temp dir. A run that ends normally removes everything itself,
//! and its record with it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use ambit_e2e::{TestNet, net::remove_leftovers};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// Where runs are recorded, one `<prefix>.json` each.
const RUNS_DIR: &str = "/run/ambit-demo";
/// The demo's process name, as `/proc/<pid>/comm` shows it.
const PROCESS_NAME: &str = "ambit-demo";

/// What `--down` needs to know about one run.
#[derive(Debug, Serialize, Deserialize)]
struct Run {
    /// The test network's prefix: every name it made carries it.
    prefix: String,
    /// Its temp dir (config folder, logs).
    dir: PathBuf,
    pid: u32,
}

/// The record of the running demo, removed when dropped.
pub struct RunRecord {
    path: PathBuf,
}

impl RunRecord {
    /// Records the run on `net`.
    pub fn write(net: &TestNet) -> Result<Self> {
        fs::create_dir_all(RUNS_DIR).with_context(|| format!("creating {RUNS_DIR}"))?;
        let run = Run {
            prefix: net.prefix().to_owned(),
            dir: net.dir().to_owned(),
            pid: std::process::id(),
        };
        let path = Path::new(RUNS_DIR).join(format!("{}.json", run.prefix));
        fs::write(&path, serde_json::to_vec(&run)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for RunRecord {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.path) {
            eprintln!("ambit-demo: removing {}: {error}", self.path.display());
        }
    }
}

/// Removes the leftovers of every recorded run whose demo no longer runs; says what it
/// removed and which runs it left because they still run.
pub fn down() -> Result<String> {
    let mut said = Vec::new();
    let entries = match fs::read_dir(RUNS_DIR) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        entries => entries
            .with_context(|| format!("listing {RUNS_DIR}"))?
            .collect::<Result<_, _>>()?,
    };
    for entry in entries {
        let path = entry.path();
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let run: Run = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run record", path.display()))?;
        if still_running(run.pid) {
            said.push(format!(
                "left {} alone: its demo still runs (pid {}); press Enter in it to stop it",
                run.prefix, run.pid
            ));
            continue;
        }
        remove_leftovers(&run.prefix)?;
        if run.dir.exists() {
            fs::remove_dir_all(&run.dir)
                .with_context(|| format!("removing {}", run.dir.display()))?;
        }
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        said.push(format!(
            "removed run {}: its processes, network namespaces, cgroups, bpffs pins and {}",
            run.prefix,
            run.dir.display()
        ));
    }
    if said.is_empty() {
        said.push("no demo run left anything behind".to_owned());
    }
    Ok(said.join("\n"))
}

/// Whether `pid` is a live `ambit-demo` (a killed one can linger as a zombie until its
/// parent reaps it).
fn still_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state …`; comm may hold spaces and parentheses, so split at the last `)`.
    stat.split_once(" (")
        .and_then(|(_, rest)| rest.rsplit_once(") "))
        .is_some_and(|(comm, rest)| comm == PROCESS_NAME && !rest.starts_with('Z'))
}
