//! `ambit-agent`: the node agent binary. `run` captures and enrols; `uninstall`
//! removes every pin (and so every attachment) the agent made.

use std::{path::Path, sync::Arc};

use ambit_agent::{
    agent::Agent,
    capture, cni_server,
    config::{CNI_SOCKET_NAME, Cli, Command, Config, Controller, EnrolmentSource, RunArgs},
    config_watch,
    decisions::Decisions,
};
use ambit_api::{
    config::SubscriberKind,
    subscribe::{self, Subscription},
};
use anyhow::Context as _;
use clap::Parser as _;
use tracing::info;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ambit_api::logging::init();
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Uninstall { paths, cni } => {
            if let Some(install) = cni.install(paths.run_dir.join(CNI_SOCKET_NAME)) {
                install.uninstall().context("removing the CNI plugin")?;
            }
            capture::uninstall(&paths.bpffs_dir)
                .with_context(|| format!("uninstalling {}", paths.bpffs_dir.display()))?;
            remove_run_dir(&paths.run_dir);
            info!(bpffs = %paths.bpffs_dir.display(), "uninstalled");
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let config = Config::from_args(args, &mounts)?;
    info!(?config, "starting");
    if let Some(install) = &config.cni_install {
        let chained = install.install().context("installing the CNI plugin")?;
        info!(config = %chained.display(), "ambit-cni chained into the node's CNI configuration");
    }
    let decisions = Arc::new(match &config.enrolment {
        EnrolmentSource::Controller(_) => Decisions::from_controller(),
        EnrolmentSource::Folder(folder) => Decisions::Folder(folder.clone()),
    });
    let (agent, listeners) = Agent::start(&config, Arc::clone(&decisions))?;
    // Labels may have changed while the agent was away.
    agent.reconcile().await;
    let _watch = match config.enrolment {
        EnrolmentSource::Controller(controller) => {
            follow_controller(controller, decisions, Arc::clone(&agent));
            None
        }
        EnrolmentSource::Folder(folder) => Some(
            config_watch::spawn(&folder, &agent)
                .with_context(|| format!("watching {}", folder.display()))?,
        ),
    };
    info!("ready");
    cni_server::serve(listeners.cni, agent, shutdown_signal()).await;
    // The programs stay pinned: capture goes on while the agent is away.
    info!("stopped; capture stays in place");
    Ok(())
}

/// Subscribes to the controller as this node's agent: every update changes the
/// decisions, then the pods are reconciled with them.
fn follow_controller(controller: Controller, decisions: Arc<Decisions>, agent: Arc<Agent>) {
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let subscription = Subscription {
        address: controller.address,
        root_file: controller.root_file,
        node: controller.node,
        kind: SubscriberKind::Agent,
        token_file: controller.token_file,
    };
    tokio::spawn(async move {
        subscribe::run(subscription, &mut |update| {
            decisions.apply(&update);
            let _ = changed.send(());
            Ok(format!("{} pods on this node", update.upserted.len()))
        })
        .await;
    });
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            while changes.try_recv().is_ok() {}
            agent.reconcile().await;
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn remove_run_dir(run_dir: &Path) {
    for name in [
        ambit_agent::config::CNI_SOCKET_NAME,
        ambit_agent::config::ZTUNNEL_SOCKET_NAME,
        ambit_agent::config::STATE_FILE_NAME,
    ] {
        let _ = std::fs::remove_file(run_dir.join(name));
    }
}
