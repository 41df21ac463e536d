//! The route table: a [`Config`] compiled once into what each request is routed with.
//!
//! Compiling checks everything (regexes, header names, weights, retry conditions, …)
//! and reports every problem at once with the object and field path. Fields the
//! waypoint does not implement yet are refused when ignoring them would change which
//! requests a route takes (`sourceLabels`, `delegate`, …) and listed in
//! [`RouteTable::ignored`] when they only tune behaviour (idle timeouts, …), so the
//! caller can log them.
//!
//! A request finds its routes by its authority: the VirtualService naming that host
//! exactly, else the most specific wildcard host, else the service of that name with
//! its default route (all endpoints). Within a VirtualService the first HTTP route that
//! matches wins. A connection to a service port declared TCP (or another protocol the
//! waypoint does not parse, [`Protocol::Tcp`]) is routed the same way by the `tcp:`
//! routes, else to the service itself.

// Clusters and their endpoints; `hashing` (consistentHash) and `locality`
// (localityLbSetting) are how a cluster may choose one, `limits` (connectionPool) and
// `outlier` (outlierDetection) are the DestinationRule protections a cluster applies.
mod cluster;
mod gateway_api;
mod hashing;
mod http_route;
mod limits;
mod locality;
mod outlier;
mod rewrite;
mod route;
mod stream_routes;
mod tcp;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::Arc,
    time::Instant,
};

use ambit_api::istio::{
    DestinationRuleSpec, VirtualServiceSpec,
    destination_rule::{
        ConnectionPoolSettings, H2UpgradePolicy, LoadBalancerSettings, OutlierDetection,
        PortTrafficPolicy, SimpleLb, TrafficPolicy,
    },
};
use thiserror::Error;

pub use self::{
    cluster::{
        ActiveRequest, Balancer, Cluster, ClusterIndex, ClusterPolicy, ClusterSettings, Keepalive,
        Pooling, TcpPolicy, UpstreamEndpoint,
    },
    hashing::{RequestHash, RequestKeys},
    limits::{Admission, ConnectionLimits, ConnectionSlot, Overflow},
    outlier::{Health, OutlierPolicy},
    rewrite::{Redirect, Rewrite},
    route::{AbortReply, Action, Fault, Matched, Mirror, Route, Target, WeightedTargets, sampled},
    tcp::TcpRoute,
};
use self::{
    hashing::HashPolicy,
    locality::{LocalitySetting, Origin, SettingError},
};
use crate::{
    config::{Config, Endpoint, Named, Protocol, Role, Service},
    cors::CorsError,
    gateway::servers::{self, Binding, Servers},
    headers::HeaderError,
    host::{HostPattern, authority_host, candidates},
    matcher::{MatchError, Semantics, connection::ConnectionView},
    policy::{Policies, PolicyError},
    retry::RetryError,
    telemetry::{Workloads, settings::TelemetrySettings},
};

/// One problem in one object.
#[derive(Debug, Error)]
#[error("{kind} {object}: {problem}")]
pub struct ConfigError {
    /// `VirtualService`, `DestinationRule`, `AuthorizationPolicy`, ….
    pub kind: &'static str,
    /// `namespace/name`.
    pub object: String,
    pub problem: Problem,
}

/// Every problem found in a [`Config`].
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in the waypoint's config", self.0.len())?;
        self.0.iter().try_for_each(|error| write!(f, "\n- {error}"))
    }
}

impl std::error::Error for ConfigErrors {}

/// What is wrong with a field.
#[derive(Debug, Error)]
pub enum Problem {
    #[error(transparent)]
    Match(#[from] MatchError),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Retry(#[from] RetryError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Cors(#[from] CorsError),
    #[error(transparent)]
    Locality(#[from] SettingError),
    #[error("`{field}.{name}` is not supported by the waypoint yet: remove it")]
    Unsupported { field: String, name: String },
    #[error("`{field}` has no `{name}`: add it, or change the filter's `type`")]
    Missing { field: String, name: &'static str },
    #[error("`{field}` needs exactly one of `route`, `redirect` or `directResponse`")]
    Action { field: String },
    #[error("`{field}` sets both `httpStatus` and `grpcStatus`: keep one")]
    AbortKind { field: String },
    #[error("`{field}` is not base64 ({reason}): encode the body, or give it as `string`")]
    Base64 { field: String, reason: String },
    #[error("`{field}.route` is empty: list at least one destination")]
    NoDestination { field: String },
    #[error("`{field}`: the weights add up to 0: give the destinations weights summing to 100")]
    Weights { field: String },
    #[error("`{field}.weight: {weight}` is negative: use 0 to 100")]
    Weight { field: String, weight: i32 },
    #[error("`{field}: {port}` is not a TCP port: use 1 to 65535")]
    Port { field: String, port: u32 },
    #[error("`{field}: {code}` is not an HTTP status: use 200 to 599")]
    Status { field: String, code: u32 },
    #[error("`{field}: {code}` is not a redirect code: use 301, 302, 303, 307 or 308")]
    RedirectCode { field: String, code: u32 },
    #[error("`{field}`: {value} is not a percentage: use 0 to 100")]
    Percentage { field: String, value: f64 },
    #[error("`{field}` does not compile: {source}")]
    RewriteRegex {
        field: String,
        source: Box<regex::Error>,
    },
    #[error("`{field}` is not a valid authority: use a host name, optionally with `:port`")]
    Authority { field: String },
}

impl Problem {
    fn unsupported(field: &str, name: &str) -> Self {
        Self::Unsupported {
            field: field.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// The routes of one VirtualService (or of one service's default routes).
#[derive(Debug)]
struct VirtualHost {
    /// The ports whose traffic the routes take: `None` for every port (a waypoint's);
    /// on an ingress gateway, those a server takes the VirtualService on
    /// ([`crate::gateway::servers::PortServers::routes_for`]), none for a service's
    /// default routes.
    ports: Option<Vec<u16>>,
    routes: Vec<Route>,
    /// `tls:` routes, chosen by SNI before the `tcp:` ones.
    tls_routes: Vec<TcpRoute>,
    tcp_routes: Vec<TcpRoute>,
}

impl VirtualHost {
    /// The first TLS route, else the first TCP route, that takes `connection`.
    fn tcp_route(&self, connection: &ConnectionView<'_>) -> Option<&TcpRoute> {
        self.tls_routes
            .iter()
            .chain(&self.tcp_routes)
            .find(|route| route.matches(connection))
    }
}

/// Requests for a host on some ports (`None`: every port).
type HostOnPorts = (String, Option<Vec<u16>>);

/// The compiled, immutable routing state of a waypoint.
#[derive(Debug)]
pub struct RouteTable {
    namespace: String,
    virtual_hosts: Vec<VirtualHost>,
    /// VirtualService hosts by name, in order: the first object naming a host that
    /// applies on the port wins.
    exact_hosts: HashMap<String, Vec<usize>>,
    /// Wildcard VirtualService hosts, most specific first.
    wildcard_hosts: Vec<(HostPattern, usize)>,
    /// Services by FQDN, for requests no VirtualService covers.
    service_defaults: HashMap<String, usize>,
    /// The (service FQDN, port) pairs relayed as bytes ([`Protocol::Tcp`]).
    tcp_ports: HashSet<(String, u16)>,
    /// An ingress gateway's servers; `None` for a waypoint.
    ingress: Option<Servers>,
    policies: Policies,
    workloads: Workloads,
    /// What requests come through, as `gateways:` names it: `mesh`, or the Gateways.
    bound_as: Vec<String>,
    trace_sampling_percent: f64,
    /// Whether requests get access-log lines (Telemetry `accessLogging`).
    access_logging: bool,
    ignored: Vec<String>,
    /// Every cluster the routes use, for the next table to carry on from.
    clusters: ClusterIndex,
}

impl RouteTable {
    /// Compiles `config`, reporting every problem.
    pub fn compile(config: &Config) -> Result<Self, ConfigErrors> {
        Self::compile_after(config, None)
    }

    /// Every cluster its routes can send to.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.iter()
    }

    /// Compiles `config` to replace this table: clusters whose settings did not change
    /// carry on from this table's ([`Cluster::continuing`]).
    pub fn recompile(&self, config: &Config) -> Result<Self, ConfigErrors> {
        Self::compile_after(config, Some(&self.clusters))
    }

    fn compile_after(
        config: &Config,
        previous: Option<&ClusterIndex>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut ignored = Vec::new();
        for rule in &config.destination_rules {
            check_destination_rule(rule, &mut errors, &mut ignored);
        }
        let clusters = build_clusters(config, previous);

        let telemetry = TelemetrySettings::of(config);
        let mut table = Self {
            namespace: config.namespace.clone(),
            virtual_hosts: Vec::new(),
            exact_hosts: HashMap::new(),
            wildcard_hosts: Vec::new(),
            service_defaults: HashMap::new(),
            tcp_ports: HashSet::new(),
            ingress: match &config.role {
                Role::Waypoint => None,
                Role::Ingress(gateways) => Some(Servers::compile(gateways)),
            },
            policies: Policies::compile(config, &clusters, &mut errors),
            workloads: Workloads::new(&config.services, &config.workloads),
            bound_as: match &config.role {
                Role::Waypoint => vec!["mesh".to_owned()],
                Role::Ingress(gateways) => gateways.iter().map(Named::key).collect(),
            },
            trace_sampling_percent: trace_sampling(config, &telemetry, &mut errors),
            access_logging: telemetry.access_logging,
            ignored,
            clusters: ClusterIndex::default(),
        };
        for vs in &config.virtual_services {
            let bound_to = match &config.role {
                Role::Waypoint if vs.spec.applies_to_mesh() => Vec::new(),
                Role::Ingress(gateways) => match servers::bound_gateways(vs, gateways) {
                    bound if !bound.is_empty() => bound,
                    _ => continue,
                },
                Role::Waypoint => continue,
            };
            table.add_virtual_service(vs, bound_to, &clusters, &mut errors);
        }
        table.add_gateway_api_routes(config, &clusters, &mut errors);
        table
            .wildcard_hosts
            .sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.specificity()));
        for service in &config.services {
            let host = service.hostname();
            let index = table.virtual_hosts.len();
            let all = clusters.get(&host, "");
            table.virtual_hosts.push(VirtualHost {
                ports: table.ingress.is_some().then(Vec::new),
                routes: vec![Route::service_default(&host, all.clone())],
                tls_routes: Vec::new(),
                tcp_routes: vec![TcpRoute::service_default(&host, all)],
            });
            table.tcp_ports.extend(
                service
                    .ports
                    .iter()
                    .filter(|port| port.protocol() == Protocol::Tcp)
                    .map(|port| (host.clone(), port.port)),
            );
            table.service_defaults.insert(host, index);
        }
        table.clusters = clusters;
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn add_virtual_service(
        &mut self,
        vs: &Named<VirtualServiceSpec>,
        bound_to: Vec<String>,
        clusters: &ClusterIndex,
        errors: &mut Vec<ConfigError>,
    ) {
        let object = vs.key();
        let mut problems = Vec::new();
        let routes: Vec<Route> = vs
            .spec
            .http
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| {
                Route::compile(
                    (&object, &vs.namespace),
                    (&format!("http[{i}]"), i),
                    spec,
                    Semantics::VirtualService,
                    clusters,
                    &mut problems,
                )
            })
            .collect();
        let tcp_routes: Vec<TcpRoute> = vs
            .spec
            .tcp
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| {
                TcpRoute::compile(&object, &vs.namespace, i, spec, clusters, &mut problems)
            })
            .collect();
        let tls_routes: Vec<TcpRoute> = vs
            .spec
            .tls
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| {
                TcpRoute::compile(&object, &vs.namespace, i, spec, clusters, &mut problems)
            })
            .collect();
        if !problems.is_empty() {
            errors.extend(problems.into_iter().map(|problem| ConfigError {
                kind: "VirtualService",
                object: object.clone(),
                problem,
            }));
            return;
        }
        let index = self.virtual_hosts.len();
        let hosts: Vec<HostPattern> = vs
            .spec
            .hosts
            .iter()
            .map(|host| HostPattern::resolve(host, &vs.namespace))
            .collect();
        let ports = self.ingress.as_ref().map(|servers| {
            servers.ports_routing(&Binding {
                namespace: vs.namespace.clone(),
                hosts: hosts.clone(),
                gateways: bound_to,
            })
        });
        self.virtual_hosts.push(VirtualHost {
            ports,
            routes,
            tls_routes,
            tcp_routes,
        });
        for host in hosts {
            match host {
                HostPattern::Exact(name) => {
                    self.exact_hosts.entry(name).or_default().push(index);
                }
                wildcard => self.wildcard_hosts.push((wildcard, index)),
            }
        }
    }

    /// The routes for a request to `authority` (`Host` / `:authority`) on `port` (the
    /// ingress gateway's listener; a waypoint's routes hold on every port), or `None`
    /// when no VirtualService or service has that name (Envoy's `NR`).
    #[must_use]
    pub fn routes(&self, authority: &str, port: u16) -> Option<&[Route]> {
        self.virtual_host(authority, port)
            .map(|host| host.routes.as_slice())
    }

    /// Whether connections to `service` (FQDN) on `port` are relayed as bytes: the
    /// service declares the port TCP, or another protocol the waypoint does not parse.
    #[must_use]
    pub fn relays_tcp(&self, service: &str, port: u16) -> bool {
        self.tcp_ports.contains(&(service.to_owned(), port))
    }

    /// Whether a connection to `service` (FQDN) on `port` must be inspected for the
    /// server name its TLS client asks for: its VirtualService has `tls:` routes. Others
    /// are not read before they are relayed (the server may be the one to speak first).
    #[must_use]
    pub fn routes_by_sni(&self, service: &str, port: u16) -> bool {
        self.virtual_host(service, port)
            .is_some_and(|host| !host.tls_routes.is_empty())
    }

    /// The TCP route for `connection` to `service` (FQDN): the first of the service's
    /// VirtualService's `tls:` (by SNI) then `tcp:` routes that takes it, else the
    /// service's own; `None` when the waypoint does not serve the service (Envoy's
    /// `NR`).
    #[must_use]
    pub fn tcp_route(&self, service: &str, connection: &ConnectionView<'_>) -> Option<&TcpRoute> {
        self.virtual_host(service, connection.port)
            .and_then(|host| host.tcp_route(connection))
            .or_else(|| {
                let index = self
                    .ingress
                    .is_none()
                    .then(|| self.service_defaults.get(service))??;
                self.virtual_hosts[*index].tcp_route(connection)
            })
    }

    /// The TCP route for `connection` to an ingress gateway's TCP server on `port` (or
    /// TLS server terminating TLS): the
    /// first `tcp:` route that takes it, of the bound VirtualServices in order whose
    /// hosts the server accepts. `None` on a waypoint, another kind of port, or when no
    /// route takes it (Envoy's `NR`).
    #[must_use]
    pub fn gateway_tcp_route(
        &self,
        port: u16,
        connection: &ConnectionView<'_>,
    ) -> Option<&TcpRoute> {
        let server = self.ingress.as_ref()?.on_port(port)?;
        if !server.relays_tcp() {
            return None;
        }
        // VirtualServices in order; services' defaults route no port of an ingress.
        self.virtual_hosts
            .iter()
            .filter(|vs| Self::applies_on(vs, port))
            .find_map(|vs| vs.tcp_routes.iter().find(|route| route.matches(connection)))
    }

    /// The VirtualService (or service default) for `authority` on `port`.
    fn virtual_host(&self, authority: &str, port: u16) -> Option<&VirtualHost> {
        let names = candidates(&authority_host(authority), &self.namespace);
        let applies = |index: &usize| Self::applies_on(&self.virtual_hosts[*index], port);
        let index = names
            .iter()
            .find_map(|name| self.exact_hosts.get(name)?.iter().find(|i| applies(i)))
            .or_else(|| {
                names.iter().find_map(|name| {
                    self.wildcard_hosts
                        .iter()
                        .find(|(pattern, index)| pattern.matches(name) && applies(index))
                        .map(|(_, index)| index)
                })
            })
            .or_else(|| {
                // An ingress gateway routes only what a VirtualService routes.
                self.ingress.is_none().then(|| {
                    names
                        .iter()
                        .find_map(|name| self.service_defaults.get(name))
                })?
            })?;
        Some(&self.virtual_hosts[*index])
    }

    /// Whether `host`'s routes hold on `port`.
    fn applies_on(host: &VirtualHost, port: u16) -> bool {
        host.ports
            .as_ref()
            .is_none_or(|ports| ports.contains(&port))
    }

    /// The service (FQDN) a request to `authority` is addressed to, if the waypoint
    /// serves it: what `kind: Service` policies and telemetry go by.
    #[must_use]
    pub fn service(&self, authority: &str) -> Option<&str> {
        candidates(&authority_host(authority), &self.namespace)
            .iter()
            .find_map(|name| self.service_defaults.get_key_value(name))
            .map(|(name, _)| name.as_str())
    }

    /// What requests come through, as a match's `gateways` names it.
    #[must_use]
    pub fn bound_as(&self) -> &[String] {
        &self.bound_as
    }

    /// An ingress gateway's servers; `None` for a waypoint.
    #[must_use]
    pub fn ingress(&self) -> Option<&Servers> {
        self.ingress.as_ref()
    }

    /// The RequestAuthentications and AuthorizationPolicies that target the waypoint.
    #[must_use]
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The pods behind the served services, for telemetry.
    #[must_use]
    pub fn workloads(&self) -> &Workloads {
        &self.workloads
    }

    /// The share of new traces marked sampled, 0 to 100.
    #[must_use]
    pub fn trace_sampling_percent(&self) -> f64 {
        self.trace_sampling_percent
    }

    /// Whether requests get access-log lines.
    #[must_use]
    pub fn access_logging(&self) -> bool {
        self.access_logging
    }

    /// Fields the table was compiled without (the caller should log them).
    #[must_use]
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }
}

/// The Telemetry objects' sampling, else `trace_sampling_percent`, else 100.
fn trace_sampling(
    config: &Config,
    telemetry: &TelemetrySettings,
    errors: &mut Vec<ConfigError>,
) -> f64 {
    let percent = telemetry
        .trace_sampling_percent
        .or(config.trace_sampling_percent)
        .unwrap_or(100.0);
    if !(0.0..=100.0).contains(&percent) {
        errors.push(ConfigError {
            kind: "Config",
            object: "waypoint".to_owned(),
            problem: Problem::Percentage {
                field: "trace_sampling_percent".to_owned(),
                value: percent,
            },
        });
    }
    percent
}

/// Refuses what a DestinationRule asks that the waypoint cannot do, and lists what it
/// ignores.
fn check_destination_rule(
    rule: &Named<DestinationRuleSpec>,
    errors: &mut Vec<ConfigError>,
    ignored: &mut Vec<String>,
) {
    let object = rule.key();
    let policies = std::iter::once((
        "trafficPolicy".to_owned(),
        rule.spec.traffic_policy.as_ref(),
    ))
    .chain(rule.spec.subsets.iter().enumerate().map(|(i, subset)| {
        (
            format!("subsets[{i}].trafficPolicy"),
            subset.traffic_policy.as_ref(),
        )
    }));
    for (field, policy) in policies {
        let Some(policy) = policy else { continue };
        let balancers = std::iter::once(("loadBalancer".to_owned(), policy.load_balancer.as_ref()))
            .chain(
                policy
                    .port_level_settings
                    .iter()
                    .enumerate()
                    .map(|(i, port)| {
                        (
                            format!("portLevelSettings[{i}].loadBalancer"),
                            port.load_balancer.as_ref(),
                        )
                    }),
            );
        for (lb_field, lb) in balancers {
            let Some(lb) = lb else { continue };
            let field = format!("{field}.{lb_field}");
            let mut refuse = |problem: Problem| {
                errors.push(ConfigError {
                    kind: "DestinationRule",
                    object: object.clone(),
                    problem,
                });
            };
            if let Some(Err(error)) = lb
                .consistent_hash
                .as_ref()
                .map(|spec| HashPolicy::new(spec, &format!("{field}.consistentHash")))
            {
                refuse(error.into());
            }
            if lb.simple == Some(SimpleLb::Passthrough) {
                refuse(Problem::unsupported(&field, "simple: PASSTHROUGH"));
            }
            if let Some(Err(error)) = lb
                .locality_lb_setting
                .as_ref()
                .map(|spec| LocalitySetting::new(spec, &format!("{field}.localityLbSetting")))
            {
                refuse(error.into());
            }
            if lb.warmup_duration_secs.is_some() {
                ignored.push(format!(
                    "DestinationRule {object}: `{field}.warmupDurationSecs`"
                ));
            }
        }
        let pool = policy.connection_pool.as_ref();
        let http = pool.and_then(|p| p.http.as_ref());
        let tuned = [
            (
                "connectionPool.http.maxConcurrentStreams",
                http.is_some_and(|h| h.max_concurrent_streams.is_some()),
            ),
            ("tls", policy.tls.is_some()),
            ("tunnel", policy.tunnel.is_some()),
            ("proxyProtocol", policy.proxy_protocol.is_some()),
        ];
        ignored.extend(
            tuned
                .iter()
                .filter(|(_, set)| *set)
                .map(|(name, _)| format!("DestinationRule {object}: `{field}.{name}`")),
        );
    }
}

/// The most specific DestinationRule for each service, by FQDN.
fn destination_rules_by_host(config: &Config) -> HashMap<String, &DestinationRuleSpec> {
    let patterns: Vec<(HostPattern, &DestinationRuleSpec)> = config
        .destination_rules
        .iter()
        .map(|rule| {
            (
                HostPattern::resolve(&rule.spec.host, &rule.namespace),
                &rule.spec,
            )
        })
        .collect();
    config
        .services
        .iter()
        .filter_map(|service| {
            let host = service.hostname();
            let rule = patterns
                .iter()
                .filter(|(pattern, _)| pattern.matches(&host))
                .max_by_key(|(pattern, _)| pattern.specificity())
                .map(|(_, rule)| *rule)?;
            Some((host, rule))
        })
        .collect()
}

/// One cluster per service port for all endpoints, and one per port and subset, each
/// carrying on from `previous`'s of the same name.
fn build_clusters(config: &Config, previous: Option<&ClusterIndex>) -> ClusterIndex {
    let start = Instant::now();
    let rules = destination_rules_by_host(config);
    let origin = Origin {
        locality: &config.locality,
        labels: &config.labels,
    };
    let mut index = ClusterIndex::default();
    for service in &config.services {
        let host = service.hostname();
        let rule = rules.get(&host).copied();
        let subsets = std::iter::once(("", None, None)).chain(rule.into_iter().flat_map(|rule| {
            rule.subsets
                .iter()
                .map(|s| (s.name.as_str(), Some(&s.labels), s.traffic_policy.as_ref()))
        }));
        for (subset, labels, subset_policy) in subsets {
            for port in &service.ports {
                let policies = [subset_policy, rule.and_then(|r| r.traffic_policy.as_ref())];
                let lb = effective(policies, port.port, PolicyScope::load_balancer);
                let outlier = effective(policies, port.port, PolicyScope::outlier_detection);
                let endpoints = subset_endpoints(service, labels);
                let pool = effective(policies, port.port, PolicyScope::connection_pool);
                // `h2UpgradePolicy: UPGRADE` speaks HTTP/2 to an HTTP/1.1 port's pods.
                let upgrade = pool.and_then(|pool| pool.http.as_ref()?.h2_upgrade_policy)
                    == Some(H2UpgradePolicy::Upgrade);
                let http2 = port.speaks_http2() || upgrade;
                let policy = ClusterPolicy {
                    balancer: Balancer::from_settings(lb),
                    limits: pool.and_then(|pool| ConnectionLimits::new(pool, http2)),
                    tcp: TcpPolicy::new(pool),
                    outlier: outlier.and_then(|spec| OutlierPolicy::new(spec, start)),
                    locality: locality_setting(lb).and_then(|setting| {
                        setting.for_cluster(origin, outlier.is_some(), &endpoints)
                    }),
                };
                let settings = ClusterSettings {
                    http2,
                    load_balancer: lb.cloned(),
                    connection_pool: pool.cloned(),
                    outlier_detection: outlier.cloned(),
                };
                let mut cluster = Cluster::new(
                    format!("outbound|{}|{subset}|{host}", port.port),
                    settings,
                    endpoints
                        .iter()
                        .map(|e| std::net::SocketAddr::from((e.ip, port.endpoint_port()))),
                    policy,
                );
                if let Some(before) = previous.and_then(|p| p.find(&host, subset, port.port)) {
                    cluster = cluster.continuing(before);
                }
                index.insert(&host, subset, port.port, Arc::new(cluster));
            }
        }
    }
    index
}

/// A traffic policy, or one port's settings in it.
#[derive(Debug, Clone, Copy)]
enum PolicyScope<'p> {
    Whole(&'p TrafficPolicy),
    Port(&'p PortTrafficPolicy),
}

impl<'p> PolicyScope<'p> {
    fn load_balancer(self) -> Option<&'p LoadBalancerSettings> {
        match self {
            Self::Whole(p) => p.load_balancer.as_ref(),
            Self::Port(p) => p.load_balancer.as_ref(),
        }
    }

    fn connection_pool(self) -> Option<&'p ConnectionPoolSettings> {
        match self {
            Self::Whole(p) => p.connection_pool.as_ref(),
            Self::Port(p) => p.connection_pool.as_ref(),
        }
    }

    fn outlier_detection(self) -> Option<&'p OutlierDetection> {
        match self {
            Self::Whole(p) => p.outlier_detection.as_ref(),
            Self::Port(p) => p.outlier_detection.as_ref(),
        }
    }
}

/// Where one setting comes from for `port`, as Istio merges policies: the subset's
/// (its port-level settings, then its own), else the rule's (likewise). `policies`
/// lists the subset's policy then the rule's; `get` reads the setting from a scope.
fn effective<'p, T>(
    policies: [Option<&'p TrafficPolicy>; 2],
    port: u16,
    get: impl Fn(PolicyScope<'p>) -> Option<&'p T>,
) -> Option<&'p T> {
    policies.into_iter().flatten().find_map(|policy| {
        policy
            .port_level_settings
            .iter()
            .filter(|p| p.port.is_some_and(|p| p.number == u32::from(port)))
            .find_map(|p| get(PolicyScope::Port(p)))
            .or_else(|| get(PolicyScope::Whole(policy)))
    })
}

/// The locality balancing `lb` asks for: its `localityLbSetting`, else Istio's mesh
/// default (on); `None` when the setting does not compile (the table refuses it).
fn locality_setting(lb: Option<&LoadBalancerSettings>) -> Option<LocalitySetting> {
    match lb.and_then(|lb| lb.locality_lb_setting.as_ref()) {
        Some(spec) => LocalitySetting::new(spec, "localityLbSetting").ok(),
        None => Some(LocalitySetting::default()),
    }
}

/// The endpoints of `service` the subset with `labels` selects (`None`: all).
fn subset_endpoints<'s>(
    service: &'s Service,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<&'s Endpoint> {
    service
        .endpoints
        .iter()
        .filter(|endpoint| {
            labels.is_none_or(|labels| {
                labels
                    .iter()
                    .all(|(key, value)| endpoint.labels.get(key) == Some(value))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
