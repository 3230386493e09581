//! systemd's readiness protocol (`sd_notify(3)`): under `Type=notify` (or `notify-reload`) the
//! service manager learns when the proxy is ready, when it reloads and when it stops, so that
//! `systemctl start` and `systemctl reload` return when the work is done. Nothing happens when
//! `NOTIFY_SOCKET` is not set.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// The listeners are bound and signals are handled.
pub(crate) fn ready() {
    send("READY=1\nSTATUS=serving");
}

/// A reload begins (`READY=1` follows when it is over, taken or refused).
pub(crate) fn reloading() {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"));
}

/// The drain begins.
pub(crate) fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}

fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let path = path.as_encoded_bytes();
        // `@name` is a socket in the abstract namespace.
        if let Some(name) = path.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)
        } else {
            socket.send_to(message.as_bytes(), std::ffi::OsStr::from_bytes(path))
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}
