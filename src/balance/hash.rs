//! Consistent hashing: the request hash key (`consistentHash.httpHeaderName`, `httpCookie`,
//! `useSourceIp`, `httpQueryParameterName`), the ring (`ringHash`, Ketama as Envoy builds it)
//! and the Maglev lookup table (`maglev`).
//!
//! Hashes are 64-bit FNV-1a followed by the SplitMix64 finalizer: stable across processes and
//! Rust releases (a cookie issued by one replica is honoured by the next), well mixed.

use std::net::SocketAddr;

use crate::registry::Endpoint;

/// Envoy's `maximum_ring_size` default: 8M entries.
pub(crate) const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's `minimum_ring_size` default (Istio `ringHash.minimumRingSize` unset).
pub const DEFAULT_MIN_RING_SIZE: u64 = 1024;
/// Envoy's Maglev `table_size` default (Istio `maglev.tableSize` unset).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
/// The largest table size Istio accepts (`tableSize` must be a prime below 5000011).
pub(crate) const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

/// 64-bit FNV-1a of `bytes`, seeded, then finalized with SplitMix64.
pub(crate) fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

pub(crate) use crate::dice::mix64;

/// The hash of an endpoint address with a suffix (`"10.0.0.1:80_3"` style, as Envoy hashes
/// `address_i` for ring entries).
fn addr_hash(seed: u64, addr: &SocketAddr, suffix: u64) -> u64 {
    use std::io::Write;
    let mut buf = [0u8; 80];
    let len = {
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        // A SocketAddr with a suffix always fits in 80 bytes; on the impossible failure the
        // prefix written so far is hashed, which is still deterministic.
        let _ = write!(cur, "{addr}_{suffix}");
        cur.position() as usize
    };
    hash64(seed, buf.get(..len).unwrap_or(&[]))
}

/// A Ketama ring: sorted `(hash, endpoint index)` entries. Each endpoint gets a number of
/// entries proportional to its weight, at least `minimum_ring_size` in total (Envoy's
/// `RingHashLoadBalancer`; `maximum_ring_size` 8M).
#[derive(Debug)]
pub(crate) struct Ring {
    entries: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring of `endpoints` (weights from `Endpoint::weight`, 0 counted as 1).
    ///
    /// Each unit of weight gets the same number of entries, `k`: the smallest power of two
    /// with `k × total weight ≥ minimum_ring_size` (at most Envoy's `maximum_ring_size`, 8M,
    /// in total). Envoy scales the entries exactly to the minimum size instead, so removing
    /// one of N endpoints also reshuffles the others' entries (about 2/N of the keys move with
    /// N = 10); with `k` a power of two an endpoint's entries stay the same while `k` does, so
    /// only the removed endpoint's keys move. `k` changes (a larger reshuffle) only when the
    /// total weight crosses `minimum_ring_size / 2^j`.
    pub(crate) fn build(endpoints: &[Endpoint], minimum_ring_size: u64) -> Ring {
        let min_size = minimum_ring_size.clamp(1, MAX_RING_SIZE);
        let total: u64 = endpoints.iter().map(|e| u64::from(e.weight.max(1))).sum();
        if endpoints.is_empty() || total == 0 {
            return Ring {
                entries: Vec::new(),
            };
        }
        let per_unit = min_size
            .div_ceil(total)
            .next_power_of_two()
            .min((MAX_RING_SIZE / total).max(1));
        let mut entries = Vec::with_capacity((per_unit * total).min(MAX_RING_SIZE) as usize);
        for (i, ep) in endpoints.iter().enumerate() {
            for k in 0..per_unit * u64::from(ep.weight.max(1)) {
                if entries.len() as u64 >= MAX_RING_SIZE {
                    break;
                }
                entries.push((addr_hash(0, &ep.addr, k), i as u32));
            }
        }
        entries.sort_unstable();
        Ring { entries }
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The endpoint owning `hash` (the first entry at or after it, wrapping), then the next
    /// distinct entries in ring order, until `accept` says yes. `None` when the ring is empty
    /// or nothing is accepted.
    pub(crate) fn find(&self, hash: u64, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.entries.len();
        if n == 0 {
            return None;
        }
        let start = self.entries.partition_point(|(h, _)| *h < hash) % n;
        let mut last = u32::MAX;
        for step in 0..n {
            let (_, idx) = *self.entries.get((start + step) % n)?;
            if idx == last {
                continue;
            }
            last = idx;
            if accept(idx as usize) {
                return Some(idx as usize);
            }
        }
        None
    }
}

/// A Maglev lookup table (Envoy's weighted `MaglevLoadBalancer`): `table_size` slots, each
/// naming an endpoint index.
#[derive(Debug)]
pub(crate) struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Builds the table of `endpoints` with `table_size` slots (Envoy: a prime; a non-prime
    /// still works, with slightly worse spread).
    pub(crate) fn build(endpoints: &[Endpoint], table_size: u64) -> Maglev {
        let m = table_size.clamp(1, MAX_MAGLEV_TABLE_SIZE);
        if endpoints.is_empty() {
            return Maglev { table: Vec::new() };
        }
        struct Entry {
            offset: u64,
            skip: u64,
            weight: u64,
            target: u64,
            next: u64,
        }
        let max_w = endpoints
            .iter()
            .map(|e| u64::from(e.weight.max(1)))
            .max()
            .unwrap_or(1);
        let mut entries: Vec<Entry> = endpoints
            .iter()
            .map(|e| Entry {
                offset: addr_hash(0, &e.addr, 0) % m,
                skip: if m > 1 {
                    addr_hash(1, &e.addr, 0) % (m - 1) + 1
                } else {
                    1
                },
                weight: u64::from(e.weight.max(1)),
                target: 0,
                next: 0,
            })
            .collect();
        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; m as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < m {
            for (i, e) in entries.iter_mut().enumerate() {
                if filled >= m {
                    break;
                }
                // A host with the largest weight takes a slot every iteration; one with a
                // third of it every third iteration (Envoy's target weights).
                if iteration * e.weight < e.target {
                    continue;
                }
                e.target += max_w;
                loop {
                    let c = ((e.offset + e.skip.wrapping_mul(e.next) % m) % m) as usize;
                    e.next += 1;
                    if let Some(slot) = table.get_mut(c)
                        && *slot == EMPTY
                    {
                        *slot = i as u32;
                        break;
                    }
                }
                filled += 1;
            }
            iteration += 1;
        }
        Maglev { table }
    }

    /// Number of slots.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The endpoint in `hash`'s slot; when `accept` refuses it, the slots of re-hashed keys
    /// (up to 32), then the following slots in order, until one is accepted.
    pub(crate) fn find(&self, hash: u64, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let m = self.table.len() as u64;
        if m == 0 {
            return None;
        }
        let mut h = hash;
        for _ in 0..32 {
            let idx = *self.table.get((h % m) as usize)? as usize;
            if accept(idx) {
                return Some(idx);
            }
            h = mix64(h ^ 0x5851_F42D_4C95_7F2D);
        }
        let start = hash % m;
        (0..m)
            .filter_map(|i| self.table.get(((start + i) % m) as usize))
            .map(|i| *i as usize)
            .find(|i| accept(*i))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (surrounding double quotes
/// removed, as Envoy does).
pub(crate) fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

/// The (raw, not percent-decoded) value of the first query parameter `name` of `query`.
pub(crate) fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}
