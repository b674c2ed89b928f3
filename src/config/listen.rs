//! `server.listen` and `--listen`: an IP address with a port, or a host name
//! with a port (`localhost:7411`), resolved once when the config is read.

use std::net::{SocketAddr, ToSocketAddrs};

/// Longest `host:port` accepted; a longer one is a mistake, not a name.
const MAX_LEN: usize = 300;

/// Parses `127.0.0.1:7411`, `[::1]:7411` or `name:port`. A name is resolved
/// (the system resolver, so /etc/hosts first) and its first IPv4 address is
/// used, else its first address: the daemon binds one socket.
pub(crate) fn parse(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "use an IP address and port, e.g. 127.0.0.1:7411 or [::1]:7411";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} has no port; {hint}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("{text:?}: {port:?} is not a port number; {hint}"));
    }
    // Only something shaped like a DNS name goes to the resolver.
    let name_like = !host.is_empty()
        && text.len() <= MAX_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !name_like {
        return Err(format!("{text:?} is not an address; {hint}"));
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?} ({e}); {hint}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address; {hint}"))
}

/// serde's side of [`parse`], for `server.listen`.
pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names() {
        assert_eq!(parse("127.0.0.1:7411").unwrap().port(), 7411);
        assert!(parse("[::1]:0").unwrap().ip().is_loopback());
        let local = parse("localhost:7411").unwrap();
        assert!(local.ip().is_loopback(), "{local}");
        assert_eq!(local.port(), 7411);
        for bad in [
            "localhost",
            "localhost:port",
            "a b:1",
            ":1",
            "127.0.0.1:99999",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("use an IP address"), "{bad}: {err}");
        }
    }
}
