//! Installing `ambit-cni` on a node, as istio-cni does: the plugin binary is copied
//! into the CNI binary directory and chained, last, into the node's primary CNI
//! configuration (the first file by name in the configuration directory, the one the
//! container runtime uses). A single-plugin `.conf` is turned into a `.conflist`.
//! Installing again replaces Ambit's entry; uninstalling removes it and the binary.
//!
//! Every file is written to a temporary name and renamed into place, so the runtime
//! never reads half a file or executes half a binary.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value, json};

/// The plugin's `type` and binary name.
pub const PLUGIN_TYPE: &str = "ambit-cni";

#[derive(Debug, thiserror::Error)]
pub enum CniInstallError {
    #[error(
        "no CNI configuration in {dir} — is the cluster's network plugin installed on this node?"
    )]
    NoConfiguration { dir: PathBuf },
    #[error("{action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("CNI configuration {path} is not valid JSON: {error}")]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error(
        "CNI configuration {path} has neither `plugins` nor `type`: not a CNI network configuration"
    )]
    NotCni { path: PathBuf },
}

/// Where to install and what to tell the plugin.
#[derive(Debug, Clone)]
pub struct CniInstall {
    /// The `ambit-cni` binary to copy.
    pub plugin_binary: PathBuf,
    /// The CNI binary directory (`/opt/cni/bin` on most nodes).
    pub bin_dir: PathBuf,
    /// The CNI configuration directory (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The agent's CNI socket, written into Ambit's entry.
    pub agent_socket: PathBuf,
}

impl CniInstall {
    /// Copies the binary and chains the plugin; returns the configuration file written.
    ///
    /// # Errors
    /// [`CniInstallError`] naming the file that could not be read or written.
    pub fn install(&self) -> Result<PathBuf, CniInstallError> {
        let binary = self.bin_dir.join(PLUGIN_TYPE);
        let bytes =
            fs::read(&self.plugin_binary).map_err(io_error("cannot read", &self.plugin_binary))?;
        write_atomically(&binary, &bytes, 0o755)?;

        let path = primary_configuration(&self.conf_dir)?;
        let config = read_json(&path)?;
        let chained = chain(config, &self.agent_socket, &path)?;
        let target = if path.extension().is_some_and(|e| e == "conflist") {
            path.clone()
        } else {
            path.with_extension("conflist")
        };
        let text = serde_json::to_vec_pretty(&chained).map_err(|error| CniInstallError::Json {
            path: target.clone(),
            error,
        })?;
        write_atomically(&target, &text, 0o644)?;
        if target != path {
            fs::remove_file(&path).map_err(io_error("cannot remove", &path))?;
        }
        Ok(target)
    }

    /// Removes Ambit's entry from the primary configuration and the binary.
    ///
    /// # Errors
    /// [`CniInstallError`] naming the file that could not be read or written.
    pub fn uninstall(&self) -> Result<(), CniInstallError> {
        if let Ok(path) = primary_configuration(&self.conf_dir) {
            let mut config = read_json(&path)?;
            if let Some(plugins) = config.get_mut("plugins").and_then(Value::as_array_mut) {
                plugins.retain(|plugin| plugin["type"] != PLUGIN_TYPE);
                let text =
                    serde_json::to_vec_pretty(&config).map_err(|error| CniInstallError::Json {
                        path: path.clone(),
                        error,
                    })?;
                write_atomically(&path, &text, 0o644)?;
            }
        }
        let binary = self.bin_dir.join(PLUGIN_TYPE);
        match fs::remove_file(&binary) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(CniInstallError::Io {
                action: "cannot remove",
                path: binary,
                error,
            }),
        }
    }
}

/// The configuration the runtime uses: the first `.conflist`, `.conf` or `.json` by
/// name.
fn primary_configuration(dir: &Path) -> Result<PathBuf, CniInstallError> {
    let mut candidates: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_error("cannot list", dir))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
        })
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| CniInstallError::NoConfiguration {
            dir: dir.to_owned(),
        })
}

/// The configuration with Ambit's entry last in its plugin list (replacing an older
/// entry), a single-plugin configuration turned into a list first.
fn chain(config: Value, agent_socket: &Path, path: &Path) -> Result<Value, CniInstallError> {
    let mut list = match config {
        Value::Object(object) if object.contains_key("plugins") => object,
        Value::Object(mut object) if object.contains_key("type") => {
            let mut list = Map::new();
            for key in ["cniVersion", "name"] {
                if let Some(value) = object.remove(key) {
                    list.insert(key.to_owned(), value);
                }
            }
            list.insert(
                "plugins".to_owned(),
                Value::Array(vec![Value::Object(object)]),
            );
            list
        }
        _ => {
            return Err(CniInstallError::NotCni {
                path: path.to_owned(),
            });
        }
    };
    let plugins = list
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| CniInstallError::NotCni {
            path: path.to_owned(),
        })?;
    plugins.retain(|plugin| plugin["type"] != PLUGIN_TYPE);
    plugins.push(json!({ "type": PLUGIN_TYPE, "agentSocket": agent_socket }));
    Ok(Value::Object(list))
}

fn read_json(path: &Path) -> Result<Value, CniInstallError> {
    let text = fs::read(path).map_err(io_error("cannot read", path))?;
    serde_json::from_slice(&text).map_err(|error| CniInstallError::Json {
        path: path.to_owned(),
        error,
    })
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CniInstallError> {
    use std::os::unix::fs::PermissionsExt as _;
    let temporary = path.with_extension("ambit-tmp");
    fs::write(&temporary, bytes).map_err(io_error("cannot write", &temporary))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))
        .map_err(io_error("cannot chmod", &temporary))?;
    fs::rename(&temporary, path).map_err(io_error("cannot move into place", path))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CniInstallError {
    let path = path.to_owned();
    move |error| CniInstallError::Io {
        action,
        path,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kind's kindnet configuration, as it writes it (addresses changed to 198.18/15).
    const KINDNET: &str = r#"{"cniVersion":"0.3.1","name":"kindnet","plugins":[{"type":"ptp","ipMasq":false,"ipam":{"type":"host-local","dataDir":"/run/cni-ipam-state","routes":[{"dst":"0.0.0.0/0"}],"ranges":[[{"subnet":"198.18.0.0/24"}]]},"mtu":1500},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;
    /// EKS's aws-node configuration (abridged).
    const AWS_CNI: &str = r#"{"cniVersion":"0.4.0","name":"aws-cni","disableCheck":true,"plugins":[{"name":"aws-cni","type":"aws-cni","vethPrefix":"eni","mtu":"9001"},{"name":"egress-cni","type":"egress-cni","mtu":"9001"},{"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}"#;
    const SINGLE: &str = r#"{"cniVersion":"1.0.0","name":"mynet","type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"198.18.1.0/24"}}"#;

    fn setup(files: &[(&str, &str)]) -> (tempfile::TempDir, CniInstall) {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = dir.path().join("net.d");
        let bin_dir = dir.path().join("bin");
        fs::create_dir_all(&conf_dir).unwrap();
        fs::create_dir_all(&bin_dir).unwrap();
        for (name, text) in files {
            fs::write(conf_dir.join(name), text).unwrap();
        }
        let plugin_binary = dir.path().join("ambit-cni-build");
        fs::write(&plugin_binary, b"#!/bin/sh\n").unwrap();
        let install = CniInstall {
            plugin_binary,
            bin_dir,
            conf_dir,
            agent_socket: PathBuf::from("/var/run/ambit/cni.sock"),
        };
        (dir, install)
    }

    fn plugin_types(path: &Path) -> Vec<String> {
        let config = read_json(path).unwrap();
        config["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn chains_last_into_kind_and_eks_configurations_once() {
        for (file, text, expected) in [
            (
                "10-kindnet.conflist",
                KINDNET,
                vec!["ptp", "portmap", "ambit-cni"],
            ),
            (
                "10-aws.conflist",
                AWS_CNI,
                vec!["aws-cni", "egress-cni", "portmap", "ambit-cni"],
            ),
        ] {
            let (_dir, install) = setup(&[(file, text), ("99-other.conflist", KINDNET)]);
            let written = install.install().unwrap();
            install.install().unwrap();
            assert_eq!(written.file_name().unwrap(), file);
            assert_eq!(plugin_types(&written), expected, "{file}");
            let config = read_json(&written).unwrap();
            assert_eq!(
                config["plugins"].as_array().unwrap().last().unwrap()["agentSocket"],
                "/var/run/ambit/cni.sock"
            );
            assert_eq!(
                plugin_types(&install.conf_dir.join("99-other.conflist")),
                ["ptp", "portmap"],
                "only the primary file changes"
            );
            let binary = install.bin_dir.join(PLUGIN_TYPE);
            assert_eq!(fs::read(&binary).unwrap(), b"#!/bin/sh\n");
        }
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_list() {
        let (_dir, install) = setup(&[("05-bridge.conf", SINGLE)]);
        let written = install.install().unwrap();
        assert_eq!(written.file_name().unwrap(), "05-bridge.conflist");
        assert!(!install.conf_dir.join("05-bridge.conf").exists());
        let config = read_json(&written).unwrap();
        assert_eq!(config["name"], "mynet");
        assert_eq!(config["cniVersion"], "1.0.0");
        assert_eq!(plugin_types(&written), ["bridge", "ambit-cni"]);
    }

    #[test]
    fn uninstall_restores_the_chain_and_removes_the_binary() {
        let (_dir, install) = setup(&[("10-kindnet.conflist", KINDNET)]);
        let written = install.install().unwrap();
        install.uninstall().unwrap();
        assert_eq!(plugin_types(&written), ["ptp", "portmap"]);
        assert!(!install.bin_dir.join(PLUGIN_TYPE).exists());
    }

    #[test]
    fn bad_configuration_folders_are_named() {
        let (_dir, install) = setup(&[]);
        let error = install.install().unwrap_err().to_string();
        assert!(
            error.contains("no CNI configuration") && error.contains("net.d"),
            "{error}"
        );
        let (_dir, install) = setup(&[("10-x.conflist", "{not json")]);
        let error = install.install().unwrap_err().to_string();
        assert!(
            error.contains("10-x.conflist") && error.contains("not valid JSON"),
            "{error}"
        );
    }
}
