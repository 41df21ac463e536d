//! A map keyed by IP address, kept as two halves, IPv4 and IPv6. The directory holds
//! several maps with an entry per workload or endpoint address (thousands of each), and
//! an `IpAddr` key is 17 bytes padded to 24 beside an 8-byte value: split by family, an
//! entry is 16 bytes (IPv4) or 24 (IPv6) instead of 32 or, with a string key, 40.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// IP address → `V`. IPv4-mapped IPv6 addresses are kept and found as IPv4.
#[derive(Debug, Clone)]
pub struct IpMap<V> {
    v4: HashMap<Ipv4Addr, V>,
    v6: HashMap<Ipv6Addr, V>,
}

impl<V> Default for IpMap<V> {
    fn default() -> Self {
        Self {
            v4: HashMap::new(),
            v6: HashMap::new(),
        }
    }
}

impl<V> IpMap<V> {
    /// The value at `ip`.
    #[must_use]
    pub fn get(&self, ip: IpAddr) -> Option<&V> {
        match ip.to_canonical() {
            IpAddr::V4(ip) => self.v4.get(&ip),
            IpAddr::V6(ip) => self.v6.get(&ip),
        }
    }

    /// Puts `value` at `ip`; returns the value it replaced.
    pub fn insert(&mut self, ip: IpAddr, value: V) -> Option<V> {
        match ip.to_canonical() {
            IpAddr::V4(ip) => self.v4.insert(ip, value),
            IpAddr::V6(ip) => self.v6.insert(ip, value),
        }
    }

    /// Puts `value()` at `ip` unless something is there already.
    pub fn insert_if_absent(&mut self, ip: IpAddr, value: impl FnOnce() -> V) {
        match ip.to_canonical() {
            IpAddr::V4(ip) => {
                self.v4.entry(ip).or_insert_with(value);
            }
            IpAddr::V6(ip) => {
                self.v6.entry(ip).or_insert_with(value);
            }
        }
    }

    /// Every entry, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &V)> {
        let v4 = self.v4.iter().map(|(ip, value)| (IpAddr::V4(*ip), value));
        let v6 = self.v6.iter().map(|(ip, value)| (IpAddr::V6(*ip), value));
        v4.chain(v6)
    }
}

impl<V> FromIterator<(IpAddr, V)> for IpMap<V> {
    fn from_iter<I: IntoIterator<Item = (IpAddr, V)>>(entries: I) -> Self {
        let mut map = Self::default();
        for (ip, value) in entries {
            map.insert(ip, value);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_are_kept_and_mapped_addresses_found_as_ipv4() {
        let mut map: IpMap<&str> = [
            ("10.0.0.1".parse().unwrap(), "four"),
            ("fd00::1".parse().unwrap(), "six"),
        ]
        .into_iter()
        .collect();
        assert_eq!(map.get("10.0.0.1".parse().unwrap()), Some(&"four"));
        assert_eq!(map.get("::ffff:10.0.0.1".parse().unwrap()), Some(&"four"));
        assert_eq!(map.get("fd00::1".parse().unwrap()), Some(&"six"));
        assert_eq!(map.get("10.0.0.2".parse().unwrap()), None);

        assert_eq!(
            map.insert("::ffff:10.0.0.1".parse().unwrap(), "mapped"),
            Some("four"),
            "a mapped address is the IPv4 one"
        );
        map.insert_if_absent("fd00::1".parse().unwrap(), || "not taken");
        map.insert_if_absent("fd00::2".parse().unwrap(), || "new");
        let mut entries: Vec<(String, &str)> = map
            .iter()
            .map(|(ip, value)| (ip.to_string(), *value))
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [
                ("10.0.0.1".to_owned(), "mapped"),
                ("fd00::1".to_owned(), "six"),
                ("fd00::2".to_owned(), "new"),
            ]
        );
    }
}
