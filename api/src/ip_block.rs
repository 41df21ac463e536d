//! IP blocks as Istio's policies write them: a CIDR (`198.18.0.0/15`) or a single
//! address (`198.18.0.7`, meaning `/32` or `/128`).

use std::net::IpAddr;

pub use ipnet::IpNet;

/// Why a text is not an IP block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an IP address or CIDR: write e.g. 198.18.0.7, 198.18.0.0/15 or 2001:db8::/32"
)]
pub struct IpBlockError(pub String);

/// Reads an address or CIDR; IPv4-mapped IPv6 addresses become IPv4.
///
/// # Errors
/// The text is neither.
pub fn parse(text: &str) -> Result<IpNet, IpBlockError> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| IpBlockError(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_cidrs() {
        let single = parse("198.18.0.7").expect("an address is a block");
        assert!(single.contains(&"198.18.0.7".parse::<IpAddr>().expect("ip")));
        assert!(!single.contains(&"198.18.0.8".parse::<IpAddr>().expect("ip")));
        let net = parse("198.18.1.9/15").expect("host bits are dropped");
        assert_eq!(net.to_string(), "198.18.0.0/15");
        assert!(net.contains(&"198.19.255.1".parse::<IpAddr>().expect("ip")));
        let mapped = parse("::ffff:10.0.0.1").expect("mapped");
        assert_eq!(mapped.to_string(), "10.0.0.1/32");
        let error = parse("10.0.0.0/40").expect_err("prefix too long");
        assert!(error.to_string().contains("10.0.0.0/40"), "{error}");
        parse("shop").expect_err("a name is not a block");
    }
}
