//! The address plan. Everything comes from the benchmarking ranges 198.18.0.0/15 and
//! 2001:2::/48 and exists only inside the test's own namespaces.
//!
//! | what                     | IPv4              | IPv6                 |
//! |--------------------------|-------------------|----------------------|
//! | node N on the underlay   | 198.19.255.N/24   | 2001:2:0:ffff::N/64  |
//! | pod subnet of node N     | 198.18.N.0/24     | 2001:2:0:N::/64      |
//! | node N's pod gateway     | 198.18.N.1        | 2001:2:0:N::1        |
//! | phantom pod I (0–4093)   | 198.19.0.0/20     | 2001:2:0:fff0::/64   |
//!
//! (N is written in hex in IPv6 addresses. The underlay's IPv6 subnet is pod subnet
//! `ffff`, which no node reaches: 2001:2:ffff::/64 would lie outside 2001:2::/48.)
//! Phantom pods exist only as manifests ([`crate::TestNet::write_phantom_pod`]):
//! nothing answers at their addresses.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use anyhow::{Context, Result, bail};

/// The most nodes one test can have (N is one octet and 255 is broadcast).
pub const MAX_NODES: u8 = 250;

/// An address with a prefix length: a subnet, or an interface address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    #[must_use]
    pub fn new(addr: impl Into<IpAddr>, prefix_len: u8) -> Self {
        Self {
            addr: addr.into(),
            prefix_len,
        }
    }

    /// Whether `ip` lies in this subnet.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (addr, len) = text
            .split_once('/')
            .with_context(|| format!("{text:?} is not ADDR/LEN"))?;
        let addr: IpAddr = addr
            .parse()
            .with_context(|| format!("bad address in {text:?}"))?;
        let prefix_len: u8 = len
            .parse()
            .with_context(|| format!("bad prefix length in {text:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            bail!("prefix length {prefix_len} too long in {text:?}");
        }
        Ok(Self { addr, prefix_len })
    }
}

/// Prefix length of the underlay's IPv4 subnet.
pub(crate) const UNDERLAY_V4_LEN: u8 = 24;
/// Prefix length of the underlay's IPv6 subnet.
pub(crate) const UNDERLAY_V6_LEN: u8 = 64;

pub(crate) fn node_underlay_v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 255, n)
}

pub(crate) fn node_underlay_v6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0xffff, 0, 0, 0, u16::from(n))
}

pub(crate) fn pod_subnet_v4(n: u8) -> Cidr {
    Cidr::new(Ipv4Addr::new(198, 18, n, 0), 24)
}

pub(crate) fn pod_subnet_v6(n: u8) -> Cidr {
    Cidr::new(Ipv6Addr::new(0x2001, 2, 0, u16::from(n), 0, 0, 0, 0), 64)
}

/// How many phantom pods the plan has addresses for.
pub const MAX_PHANTOM_PODS: u16 = 4094;

/// Phantom pod `i`'s addresses: 198.19.0.0/20 from .1, and 2001:2:0:fff0::/64.
pub(crate) fn phantom_pod(i: u16) -> Result<(Ipv4Addr, Ipv6Addr)> {
    if i >= MAX_PHANTOM_PODS {
        bail!("the address plan has room for {MAX_PHANTOM_PODS} phantom pods, not {i}");
    }
    let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + u32::from(i) + 1);
    let v6 = Ipv6Addr::new(0x2001, 2, 0, 0xfff0, 0, 0, 0, i + 1);
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_stays_in_the_benchmarking_ranges() {
        let v4_range: Cidr = "198.18.0.0/15".parse().unwrap();
        let v6_range: Cidr = "2001:2::/48".parse().unwrap();
        for n in [1, 16, MAX_NODES] {
            for ip in [node_underlay_v4(n).into(), pod_subnet_v4(n).addr] {
                assert!(v4_range.contains(ip), "{ip}");
            }
            for ip in [node_underlay_v6(n).into(), pod_subnet_v6(n).addr] {
                assert!(v6_range.contains(ip), "{ip}");
            }
        }
        assert_eq!(pod_subnet_v6(16).to_string(), "2001:2:0:10::/64");
        assert!(pod_subnet_v4(3).contains("198.18.3.77".parse().unwrap()));
        assert!(!pod_subnet_v4(3).contains("198.18.4.1".parse().unwrap()));
        let phantoms: Cidr = "198.19.0.0/20".parse().unwrap();
        for i in [0, MAX_PHANTOM_PODS - 1] {
            let (v4, v6) = phantom_pod(i).unwrap();
            assert!(phantoms.contains(v4.into()), "{v4}");
            assert!(v4 != Ipv4Addr::new(198, 19, 0, 0) && v4 != Ipv4Addr::new(198, 19, 15, 255));
            assert!(v6_range.contains(v6.into()), "{v6}");
        }
        assert!(phantom_pod(MAX_PHANTOM_PODS).is_err());
    }
}
