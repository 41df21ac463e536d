//! nginx (Debian's package) as the L7 proxy Ambit is compared with: started in a pod
//! with a config written into the test's temp dir — one worker, three `location`
//! routes to three upstreams over keep-alive HTTP/1.1, no access log — on
//! [`HTTP1_PORT`] for HTTP/1.1 and [`HTTP2_PORT`] for HTTP/2 with prior knowledge (h2c:
//! nginx 1.22 speaks only HTTP/2 on a plaintext `listen … http2` port, so it needs its
//! own).

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ambit_e2e::{ChildGuard, Pod, TestNet, wait_for};
use anyhow::{Context as _, Result, bail};

use crate::cluster::{PATHS, VERSIONS};

pub const HTTP1_PORT: u16 = 80;
pub const HTTP2_PORT: u16 = 8081;
/// Where Debian installs it.
const BINARIES: [&str; 2] = ["/usr/sbin/nginx", "/usr/bin/nginx"];
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// nginx running in a pod; stopped (SIGTERM, which also stops its worker) on drop.
pub struct Nginx {
    master: ChildGuard,
    worker: u32,
}

impl Nginx {
    /// Writes the config for `upstreams` (one per route of [`PATHS`]) and starts nginx
    /// in `pod`; returns once its worker runs.
    pub fn start(net: &TestNet, pod: &Pod, upstreams: &[SocketAddr]) -> Result<Self> {
        let binary = BINARIES
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .context(
                "nginx is not installed: apt-get install -y nginx (cargo xtask bench l7 \
                 installs it)",
            )?;
        let dir = net.dir().join("nginx");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config(&dir, upstreams))
            .with_context(|| format!("cannot write {}", conf.display()))?;
        let master = pod.spawn(Command::new(binary).arg("-c").arg(&conf))?;
        let worker = wait_for("nginx's worker", START_TIMEOUT, || {
            if let Some(status) = master.try_status()? {
                bail!("nginx exited ({status}): {}", master.stderr());
            }
            children(master.pid())
        })?;
        Ok(Self { master, worker })
    }

    /// The master's and the worker's process ids.
    pub fn pids(&self) -> [u32; 2] {
        [self.master.pid(), self.worker]
    }
}

/// The first child of `pid`, once it has one.
fn children(pid: u32) -> Result<Option<u32>> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(text.split_whitespace().next().and_then(|c| c.parse().ok()))
}

/// The config: everything nginx writes goes to `dir`; `upstreams[i]` serves
/// `PATHS[i]`.
fn config(dir: &Path, upstreams: &[SocketAddr]) -> String {
    let dir = dir.display();
    let mut upstream_blocks = String::new();
    let mut locations = String::new();
    for ((path, name), server) in PATHS.iter().zip(VERSIONS).zip(upstreams) {
        let _ = write!(
            upstream_blocks,
            "
    upstream {name} {{
        server {server};
        keepalive 64;
        keepalive_requests 1000000;
    }}"
        );
        let _ = write!(
            locations,
            "
        location {path} {{
            proxy_pass http://{name};
        }}"
        );
    }
    format!(
        "# Written by the l7 benchmark.
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    # Keep-alive upstream: HTTP/1.1 without `Connection: close`.
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    # A client connection carries the whole run (the default closes it after 1,000).
    keepalive_requests 1000000;
{upstream_blocks}
    server {{
        listen {HTTP1_PORT};
        listen {HTTP2_PORT} http2;
{locations}
    }}
}}
"
    )
}
