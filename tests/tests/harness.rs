//! Self-tests of the harness: real pods on simulated nodes talk, teardown leaves
//! nothing behind, and CNI plugins can be fed arbitrary input. They need root (see
//! `ambit_e2e::prereq`) and skip without it, except under `CI=true`.

use std::{
    collections::BTreeMap, fs, net::IpAddr, os::unix::fs::MetadataExt, path::Path,
    process::Command, time::Duration,
};

use ambit_api::manifests::Manifests;
use ambit_e2e::{
    PodSpec, TestNet,
    app::{self, ConnectReport},
    cgroup,
    cni::{CniArgs, CniCommand},
    ns, pod_app,
};
use anyhow::{Context, Result, ensure};

#[test]
fn pods_on_two_nodes_talk_over_ipv4_and_ipv6() -> Result<()> {
    let Some(net) = TestNet::new("pods_on_two_nodes_talk_over_ipv4_and_ipv6") else {
        return Ok(());
    };
    let (node1, node2) = (net.add_node("node1")?, net.add_node("node2")?);
    let client = node1.add_pod(PodSpec::new("shop", "client").label("app", "client"))?;
    let server = node2.add_pod(PodSpec::new("shop", "server").service_account("srv"))?;
    assert!(
        node1.pod_subnet_v4().contains(client.ipv4().into()),
        "{client:?}"
    );
    assert!(
        node2.pod_subnet_v6().contains(server.ipv6().into()),
        "{server:?}"
    );

    let serving = app::serve(&server, "[::]:8080".parse()?)?;
    for (to, client_ip) in [
        (server.addr_v4(8080), IpAddr::from(client.ipv4())),
        (server.addr_v6(8080), IpAddr::from(client.ipv6())),
    ] {
        let report = app::connect(&client, to)?.expect_ok()?;
        let saw = report.server_saw.clone().context("no server greeting")?;
        assert_eq!(report.peer, Some(to), "client's peer: {report:?}");
        assert_eq!(saw.local, to, "server's local address: {report:?}");
        assert_eq!(
            saw.peer.ip(),
            client_ip,
            "the server must see the client pod's address: {report:?}"
        );
        assert_eq!(report.local, Some(saw.peer), "{report:?}");
        assert_eq!(report.echo.as_deref(), Some("hello"), "{report:?}");
    }

    // The server runs in the pod's cgroup and network namespace.
    let procs = cgroup::procs(server.cgroup_path())?;
    assert!(
        procs.contains(&serving.pid()),
        "pid {} not in {procs:?}",
        serving.pid()
    );
    let ino = |path: &Path| fs::metadata(path).map(|m| m.ino());
    assert_eq!(
        ino(Path::new(&format!("/proc/{}/ns/net", serving.pid())))?,
        ino(server.netns_path())?,
        "the server is not in its pod's network namespace"
    );

    // Refusal is reported as such.
    let refused: ConnectReport = app::connect(&client, server.addr_v4(8081))?;
    assert!(!refused.ok, "{refused:?}");
    assert_eq!(
        refused.error_kind.as_deref(),
        Some("ConnectionRefused"),
        "{refused:?}"
    );

    // Ambit's manifest reader sees both pods with their uid and addresses.
    let manifests = Manifests::load_dir(&net.config_dir())?;
    ensure!(
        manifests.errors.is_empty(),
        "unreadable manifests: {:?}",
        manifests.errors
    );
    let object = manifests
        .pod("shop", "server")
        .context("no manifest for shop/server")?;
    assert_eq!(object.metadata.uid.as_deref(), Some(server.uid()));
    assert_eq!(object.spec_str("serviceAccountName"), Some("srv"));
    assert_eq!(object.spec_str("nodeName"), Some("node2"));
    assert_eq!(
        manifests
            .pod("shop", "client")
            .map(|pod| pod.metadata.labels.clone()),
        Some(BTreeMap::from([("app".to_owned(), "client".to_owned())]))
    );

    // The bridge plugin agrees the pods are set up as it left them.
    client.cni_check()?;
    Ok(())
}

#[test]
fn teardown_leaves_nothing_behind() -> Result<()> {
    let Some(net) = TestNet::new("teardown_leaves_nothing_behind") else {
        return Ok(());
    };
    let prefix = net.prefix().to_owned();
    let (cgroup_dir, temp_dir) = (net.cgroup_path().to_owned(), net.dir().to_owned());
    let node = net.add_node("node1")?;
    let kept = node.add_pod(PodSpec::new("default", "kept"))?;
    let removed = node.add_pod(PodSpec::new("default", "removed"))?;

    // A removed pod is gone at once, and CNI DEL released its address.
    let removed_netns = removed.netns_path().to_owned();
    let lease = node
        .dir()
        .join("ipam")
        .join(ambit_e2e::node::NETWORK_NAME)
        .join(removed.ipv4().to_string());
    assert!(
        lease.exists(),
        "expected host-local's lease file {}",
        lease.display()
    );
    removed.remove()?;
    assert!(
        !removed_netns.exists(),
        "{} still exists",
        removed_netns.display()
    );
    assert!(
        !lease.exists(),
        "CNI DEL should have released {}",
        lease.display()
    );
    let again = node.add_pod(PodSpec::new("default", "again"))?;

    // Leaked handles, processes and a process that escaped its parent.
    let mut pids = Vec::new();
    let sleeper = node.spawn(Command::new("sleep").arg("600"))?;
    let orphaner = kept.spawn(Command::new("sh").args(["-c", "sleep 600 & echo $!; wait"]))?;
    let line =
        orphaner.wait_for_log_line(Duration::from_secs(5), |line| line.parse::<u32>().is_ok())?;
    pids.extend([sleeper.pid(), orphaner.pid(), line.parse()?]);
    std::mem::forget(sleeper);
    std::mem::forget(orphaner);
    std::mem::forget(kept);

    // A bpffs dir with a subdirectory and, where bpftool is installed, a pinned map.
    let pins = net.bpffs_dir("pins")?;
    fs::create_dir(pins.join("sub"))?;
    if Command::new("bpftool")
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        let pin = pins.join("sub").join("map");
        let pin = pin.to_str().context("pin path")?;
        ambit_e2e::cmd::run(Command::new("bpftool").args([
            "map",
            "create",
            pin,
            "type",
            "array",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "1",
            "name",
            "ambit_e2e",
        ]))?;
    } else {
        eprintln!("bpftool not installed: checking bpffs removal without a pinned map");
    }

    drop(again);
    drop(net);

    let leftover_netns: Vec<_> = ns::list()?
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect();
    assert!(
        leftover_netns.is_empty(),
        "network namespaces left: {leftover_netns:?}"
    );
    assert!(!cgroup_dir.exists(), "cgroup {} left", cgroup_dir.display());
    assert!(!temp_dir.exists(), "temp dir {} left", temp_dir.display());
    let leftover_pins: Vec<_> = fs::read_dir("/sys/fs/bpf")?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(&prefix))
        .collect();
    assert!(
        leftover_pins.is_empty(),
        "bpffs entries left: {leftover_pins:?}"
    );
    for pid in pids {
        // Gone, or a zombie waiting for an init that does not reap: not running.
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next());
        assert!(
            matches!(state, None | Some('Z' | 'X')),
            "pid {pid} still running (state {state:?})"
        );
    }
    Ok(())
}

#[test]
fn cni_invoke_passes_malformed_input_through() -> Result<()> {
    let Some(net) = TestNet::new("cni_invoke_passes_malformed_input_through") else {
        return Ok(());
    };
    let node = net.add_node("node1")?;
    let runtime = node.cni_runtime();
    let args = CniArgs {
        container_id: "malformed".to_owned(),
        netns: Some(net.dir().join("no-such-netns")),
        ifname: "eth0".to_owned(),
        pod_namespace: "default".to_owned(),
        pod_name: "malformed".to_owned(),
        pod_uid: None,
    };

    let broken = runtime.invoke(
        "bridge",
        args.env(CniCommand::Add, &runtime.cni_path()),
        b"{not json",
    )?;
    assert!(
        !broken.status.success(),
        "expected bridge to reject malformed input: {broken}"
    );
    let error = broken.json()?;
    assert!(
        error["code"].is_u64() && error["msg"].is_string(),
        "expected a CNI error object: {broken}"
    );

    let version = runtime
        .invoke(
            "bridge",
            [("CNI_COMMAND", "VERSION")],
            br#"{"cniVersion":"1.0.0"}"#,
        )?
        .success()?;
    let supported = version.json()?["supportedVersions"].clone();
    assert!(
        supported
            .as_array()
            .is_some_and(|versions| versions.iter().any(|v| v == "1.0.0")),
        "expected bridge to support CNI 1.0.0: {version}"
    );

    let missing = runtime
        .invoke("no-such-plugin", [("CNI_COMMAND", "VERSION")], b"")
        .unwrap_err();
    assert!(
        format!("{missing:#}").contains("not found in CNI_PATH"),
        "{missing:#}"
    );
    Ok(())
}

#[test]
fn pod_app_measures_bulk_transfers_and_round_trips() -> Result<()> {
    let Some(net) = TestNet::new("pod_app_measures_bulk_transfers_and_round_trips") else {
        return Ok(());
    };
    let node = net.add_node("node1")?;
    let (client, server) = (
        node.add_pod(PodSpec::new("default", "client"))?,
        node.add_pod(PodSpec::new("default", "server"))?,
    );
    let timeout = Duration::from_secs(30);

    let sink = server.spawn(Command::new(pod_app()).args(["sink", "--listen", "0.0.0.0:9000"]))?;
    sink.wait_for_log("listening", timeout)?;
    let to = server.addr_v4(9000).to_string();
    let bulk = client
        .exec(
            Command::new(pod_app()).args([
                "bulk-send",
                "--to",
                &to,
                "--bytes",
                "10000000",
                "--write-size",
                "65536",
            ]),
            timeout,
        )?
        .success()?
        .json()?;
    assert!(bulk["ok"] == true && bulk["bytes"] == 10_000_000, "{bulk}");
    assert!(
        bulk["gbit_per_s"].as_f64().is_some_and(|rate| rate > 0.0),
        "{bulk}"
    );

    let _echo = app::serve(&server, "[::]:8080".parse()?)?;
    let to = server.addr_v6(8080).to_string();
    let rtt = client
        .exec(
            Command::new(pod_app()).args([
                "ping-pong",
                "--to",
                &to,
                "--count",
                "200",
                "--size",
                "64",
            ]),
            timeout,
        )?
        .success()?
        .json()?;
    assert!(rtt["ok"] == true && rtt["count"] == 200, "{rtt}");
    assert!(rtt["p50_us"].as_u64() <= rtt["p99_us"].as_u64(), "{rtt}");
    Ok(())
}

#[test]
fn a_failing_chained_plugin_fails_the_pod_and_is_undone() -> Result<()> {
    let Some(net) = TestNet::new("a_failing_chained_plugin_fails_the_pod_and_is_undone") else {
        return Ok(());
    };
    let node = net.add_node("node1")?;
    let plugin = net.dir().join("plugins").join("refuse");
    fs::create_dir_all(plugin.parent().context("plugin dir")?)?;
    fs::write(
        &plugin,
        "#!/bin/sh\n[ \"$CNI_COMMAND\" = DEL ] && exit 0\necho '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"refused on purpose\"}'\nexit 1\n",
    )?;
    fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    node.chain_cni_plugin(serde_json::json!({ "type": "refuse" }), &plugin)?;

    let error = node.add_pod(PodSpec::new("default", "doomed")).unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains(r#"CNI ADD of plugin "refuse" (2 of 2"#)
            && text.contains("refused on purpose"),
        "expected the failing plugin and its message in: {text}"
    );
    let netns = format!("{}-node1-doomed", net.prefix());
    assert!(
        !ns::list()?.contains(&netns),
        "the failed pod's namespace {netns} is left"
    );
    let leases = node.dir().join("ipam").join(ambit_e2e::node::NETWORK_NAME);
    let leased: Vec<_> = fs::read_dir(&leases)?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("198.") || name.starts_with("2001:"))
        .collect();
    assert!(
        leased.is_empty(),
        "CNI DEL after the failed ADD should release the addresses: {leased:?}"
    );
    assert!(
        Manifests::load_dir(&net.config_dir())?
            .pod("default", "doomed")
            .is_none(),
        "the failed pod's manifest is left"
    );
    Ok(())
}
