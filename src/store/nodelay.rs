//! Turns Nagle's algorithm off on salve's PostgreSQL connections, which sqlx 0.9.0 leaves
//! on.
//!
//! sqlx 0.9.0 stopped setting `TCP_NODELAY` on its sockets (transact-rs/sqlx#4335; the fix,
//! #4336, is merged but not released). Over TLS it writes each TLS record with a write of
//! its own, so a statement larger than one record (16 KB) is two writes; Nagle holds the
//! second until the server acknowledges the first, and the server delays that
//! acknowledgement: 40 ms on Linux. Measured against a local PostgreSQL 15 with TLS: a
//! transaction with one 20 KB INSERT took 44 ms at the median on sqlx's socket, 0.5 ms
//! with `TCP_NODELAY` (0.45 ms without TLS either way). An engine record that large (a
//! big policy input, say) would hold the whole batch of writes it is in for those 40 ms.
//!
//! sqlx does not hand out its socket. So, once connected, salve asks the server which ports
//! the connection joins, finds the process's TCP socket with those two ports, and sets the
//! option on it. Through a proxy that rewrites ports (a connection pooler, a cloud SQL
//! proxy) no socket matches: that is logged, and the connection works as before, slower at
//! times. Remove this module once salve's sqlx sets `TCP_NODELAY` itself.

use sqlx::{AnyConnection, Row};

/// Sets `TCP_NODELAY` on the socket under `conn`, a new PostgreSQL connection (salve's
/// pools call it on each; the ingest bench on its own), and says whether it did: then a
/// statement of any size goes out at once, and the writer need not cut its inserts to
/// fit a TLS record. Only a connection that fails under the question fails it (it is no
/// good): a server that cannot answer it (a look-alike without the functions), or a
/// socket that cannot be found or set, is logged and left as it is (`false`).
pub async fn disable_nagle(conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    let asked = sqlx::query("SELECT inet_client_port() AS local, inet_server_port() AS remote")
        .fetch_one(&mut *conn)
        .await;
    let ports = match asked {
        Ok(ports) => ports,
        Err(sqlx::Error::Database(e)) => {
            tracing::debug!(error = %e, "the server does not say a connection's ports: TCP_NODELAY not set");
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let local: Option<i32> = ports.try_get("local")?;
    let remote: Option<i32> = ports.try_get("remote")?;
    // The server's end is a Unix socket, which has no Nagle; but a proxy may stand
    // between, reached over TCP: only a socket salve set is known to have it off.
    let (Some(local), Some(remote)) = (local, remote) else {
        return Ok(false);
    };
    let (Ok(local), Ok(remote)) = (u16::try_from(local), u16::try_from(remote)) else {
        return Ok(false);
    };
    match set_nodelay(local, remote) {
        Ok(true) => return Ok(true),
        Ok(false) => tracing::debug!(
            local,
            remote,
            "no socket of this process joins the ports PostgreSQL reports (a proxy between?): TCP_NODELAY not set, some statements may wait 40 ms"
        ),
        Err(e) => {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a PostgreSQL connection")
        }
    }
    Ok(false)
}

/// Sets `TCP_NODELAY` on this process's TCP socket from port `local` to port `remote`;
/// `false` if there is none.
#[cfg(target_os = "linux")]
fn set_nodelay(local: u16, remote: u16) -> std::io::Result<bool> {
    use std::os::fd::{BorrowedFd, RawFd};

    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(fd) = entry?.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // SAFETY: the descriptor is only used for the duration of this iteration. Another
        // thread may close it meanwhile: then the calls below fail, or ask a descriptor that
        // took its number for its addresses, which changes nothing. The one descriptor
        // written to is the one whose ports are the connection's, and the connection, which
        // the caller holds, keeps it open.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let port = |addr: std::io::Result<socket2::SockAddr>| {
            addr.ok().and_then(|a| a.as_socket()).map(|a| a.port())
        };
        if port(socket.local_addr()) == Some(local) && port(socket.peer_addr()) == Some(remote) {
            socket.set_tcp_nodelay(true)?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Elsewhere the process's sockets are not listed in `/proc`: left as sqlx made them.
#[cfg(not(target_os = "linux"))]
fn set_nodelay(_local: u16, _remote: u16) -> std::io::Result<bool> {
    Ok(false)
}
