//! Slots counted per client address, so that one client cannot take every
//! slot of a shared limit (connections, intake permits).
//!
//! A client is its IPv4 address, or the /64 prefix of its IPv6 address:
//! one host is routinely given a whole /64 and can pick any address in it,
//! so counting IPv6 addresses one by one would bound nothing. An IPv4
//! client seen over an IPv6 socket (`::ffff:a.b.c.d`) is the IPv4 client.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Whom a slot is counted against: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl Client {
    pub fn of(ip: IpAddr) -> Client {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Client(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => Client(v4),
        }
    }
}

/// At most `cap` slots held at once by each client.
pub struct PerClient {
    counts: Mutex<HashMap<Client, usize>>,
    cap: usize,
}

impl PerClient {
    pub fn new(cap: usize) -> Arc<PerClient> {
        assert!(cap > 0, "a per-client cap of 0 would refuse everyone");
        Arc::new(PerClient {
            counts: Mutex::new(HashMap::new()),
            cap,
        })
    }

    /// How many slots one client may hold.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// One of `ip`'s client's slots, or None if it holds all of them.
    pub fn take(self: &Arc<PerClient>, ip: IpAddr) -> Option<ClientSlot> {
        let client = Client::of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(client).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: self.clone(),
            client,
        })
    }

    /// Clients holding at least one slot (the table never keeps a zero).
    pub fn clients(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A slot of one client, given back when dropped.
pub struct ClientSlot {
    table: Arc<PerClient>,
    client: Client,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_client_gets_the_cap_and_no_more() {
        let table = PerClient::new(2);
        let a1 = table.take(ip("192.0.2.1")).unwrap();
        let _a2 = table.take(ip("192.0.2.1")).unwrap();
        assert!(table.take(ip("192.0.2.1")).is_none());
        // Another address is another client.
        let _b = table.take(ip("192.0.2.2")).unwrap();
        drop(a1);
        assert!(table.take(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let table = PerClient::new(1);
        let _held = table.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(table.take(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).is_none());
        assert!(table.take(ip("2001:db8:1:3::1")).is_some());
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_ipv4_client() {
        let table = PerClient::new(1);
        let _held = table.take(ip("192.0.2.7")).unwrap();
        assert!(table.take(ip("::ffff:192.0.2.7")).is_none());
        assert_eq!(
            Client::of(ip("::ffff:192.0.2.7")),
            Client::of(ip("192.0.2.7"))
        );
    }

    #[test]
    fn a_client_whose_slots_are_all_back_is_forgotten() {
        let table = PerClient::new(3);
        let slots: Vec<_> = (0..3)
            .map(|_| table.take(ip("192.0.2.9")).unwrap())
            .collect();
        assert_eq!(table.clients(), 1);
        drop(slots);
        assert_eq!(table.clients(), 0);
    }
}
