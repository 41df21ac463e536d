//! Compiles `proto/*.proto` with protox (pure Rust), so no system `protoc` is needed.
//!
//! `proto/istio/ca.proto` (Istio's certificate service, with its gRPC client and server
//! trait) is compiled only with the `ca` feature, so crates that do not use it do not
//! pay for tonic; `proto/ambit/config.proto` (the config push) likewise with `config`,
//! and `proto/envoy/ext_authz.proto` (Envoy's external authorization) with `ext-authz`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/handoff.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;

    #[cfg(feature = "ca")]
    {
        let ca = "proto/istio/ca.proto";
        println!("cargo:rerun-if-changed={ca}");
        let descriptors = protox::compile([ca], ["proto"])?;
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(descriptors)?;
    }

    #[cfg(feature = "config")]
    {
        let config = "proto/ambit/config.proto";
        println!("cargo:rerun-if-changed={config}");
        let descriptors = protox::compile([config], ["proto"])?;
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(descriptors)?;
    }

    #[cfg(feature = "ext-authz")]
    {
        let ext_authz = "proto/envoy/ext_authz.proto";
        println!("cargo:rerun-if-changed={ext_authz}");
        let descriptors = protox::compile([ext_authz], ["proto"])?;
        tonic_prost_build::configure()
            .build_client(false)
            .build_server(true)
            .compile_fds(descriptors)?;
    }
    Ok(())
}
