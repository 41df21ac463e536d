//! From /proc: what a process costs (CPU time, resident memory), and how busy the
//! machine was.

use std::fs;

use anyhow::{Context as _, Result};

/// User + system CPU seconds of the processes, from `/proc/<pid>/stat` (all threads).
pub fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    // USER_HZ, the unit of /proc/<pid>/stat times, is 100 on Linux.
    const CLOCK_TICKS_PER_SEC: f64 = 100.0;
    let mut ticks = 0u64;
    for pid in pids {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start after ") ".
        let after = stat
            .rsplit_once(") ")
            .context("malformed /proc/pid/stat")?
            .1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
        ticks += fields.get(11).context("utime")?.parse::<u64>()?;
        ticks += fields.get(12).context("stime")?.parse::<u64>()?;
    }
    #[expect(clippy::cast_precision_loss, reason = "a CPU-time figure")]
    Ok(ticks as f64 / CLOCK_TICKS_PER_SEC)
}

/// Resident set size now (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// Peak resident set size (`VmHWM`) since start or [`reset_peak_rss`], in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM")
}

/// Starts `VmHWM` over from the current RSS (`clear_refs` 5, Linux ≥ 4.0).
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    fs::write(&path, "5").with_context(|| format!("cannot reset the peak RSS in {path}"))
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} in /proc/{pid}/status is not a number"))
}

/// KiB as MiB, for printing.
#[expect(clippy::cast_precision_loss, reason = "a memory figure")]
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Busy and total CPU time of the whole machine so far, in ticks of all CPUs (the
/// first line of `/proc/stat`; idle and iowait are not busy).
pub fn machine_cpu_ticks() -> Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("malformed /proc/stat line {line:?}"))?;
    let total = ticks.iter().sum();
    // user nice system idle iowait …: fields 3 and 4 are idle and iowait.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The share of the machine's CPU time that was busy between two
/// [`machine_cpu_ticks`] readings.
#[expect(clippy::cast_precision_loss, reason = "a share of CPU time")]
pub fn busy_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1);
    after.0.saturating_sub(before.0) as f64 / total as f64
}

/// The 1-minute load average and the number of CPUs: how much else competed with the
/// benchmark (which counts itself).
pub fn load_average() -> Result<(f64, usize)> {
    let text = fs::read_to_string("/proc/loadavg")?;
    let one_minute = text
        .split_whitespace()
        .next()
        .context("empty /proc/loadavg")?
        .parse()?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    Ok((one_minute, cpus))
}
