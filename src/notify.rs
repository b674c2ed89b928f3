//! systemd readiness and watchdog notifications (`sd_notify`), written as
//! datagrams to `$NOTIFY_SOCKET`. Without that variable (not under systemd,
//! or `Type=` is not `notify`) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sends one notification such as `READY=1`. Errors are logged, never fatal:
/// a daemon must not stop because its supervisor is gone.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(error = %e, state, "could not notify systemd");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    UnixDatagram::unbound()
        .and_then(|socket| {
            let bytes = path.as_encoded_bytes();
            if let Some(name) = bytes.strip_prefix(b"@") {
                // An abstract socket: the name after '@' has a leading NUL.
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            } else {
                socket.send_to(state.as_bytes(), path)
            }
        })
        .map(drop)
}

/// The watchdog period systemd expects (`$WATCHDOG_USEC`), if it set one for
/// this process (`$WATCHDOG_PID`, when present, must be ours).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Sends `WATCHDOG=1` at half the watchdog period until `shutdown`. It runs
/// on the async runtime, so a wedged runtime stops the pings and systemd
/// restarts the daemon.
pub(crate) fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(period) = watchdog_interval() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => notify("WATCHDOG=1"),
                () = shutdown.cancelled() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
