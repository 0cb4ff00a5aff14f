//! Who owns the other end of a loopback TCP connection (Linux): the socket
//! whose local address is our peer's and whose remote address is ours, found
//! in `/proc/net/tcp` and `/proc/net/tcp6`, with the uid the kernel lists
//! for it. Both ends of a loopback connection are in our network namespace.

use std::net::{IpAddr, SocketAddr};

/// The uid owning the socket at `peer` that is connected to our `local`,
/// or `None` when no such socket is listed (it closed, or is not local).
pub(super) fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|path| {
        let table = std::fs::read_to_string(path).ok()?;
        find_uid(&table, &entry(peer)?, &entry(local)?)
    })
}

/// The table's form of an address for one file: IPv4 in `/proc/net/tcp`
/// (`0100007F:1F90`), IPv6 in `/proc/net/tcp6`, each 32-bit word of the
/// address in host byte order, the port in hex. Entries are compared in
/// both files: a v4 connection from a dual-stack socket is listed in tcp6
/// as `::ffff:a.b.c.d`.
fn entry(addr: SocketAddr) -> Option<[String; 2]> {
    let v6 = match addr.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    };
    let v4 = match addr.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    let word = |b: &[u8]| -> Option<String> {
        let bytes: [u8; 4] = b.try_into().ok()?;
        Some(format!("{:08X}", u32::from_ne_bytes(bytes)))
    };
    let mut six = String::with_capacity(32);
    for chunk in v6.octets().chunks(4) {
        six.push_str(&word(chunk)?);
    }
    let four = match v4 {
        Some(ip) => word(&ip.octets())?,
        None => String::new(),
    };
    let port = addr.port();
    Some([format!("{four}:{port:04X}"), format!("{six}:{port:04X}")])
}

/// The uid column of the line whose local address is `peer` and remote
/// address is `local`, in either form.
fn find_uid(table: &str, peer: &[String; 2], local: &[String; 2]) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let (ours, theirs) = (cols.nth(1)?, cols.next()?);
        let matches = |have: &str, want: &[String; 2]| {
            want.iter()
                .any(|w| !w.starts_with(':') && have.eq_ignore_ascii_case(w))
        };
        if !(matches(ours, peer) && matches(theirs, local)) {
            return None;
        }
        // st, tx:rx, tr:when, retrnsmt, then the uid.
        cols.nth(4)?.parse().ok()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_uid_of_a_connection_of_our_own_is_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let local = server.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(peer_uid(local, peer), Some(me));
        // A peer that is not connected to us is nobody's.
        let elsewhere = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(peer_uid(local, elsewhere), None);
    }

    #[test]
    fn table_lines_are_matched_on_both_addresses() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 1 1 0\n\
   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  0        0 2 1 0\n";
        let peer = entry(SocketAddr::from(([127, 0, 0, 1], 0x9C40))).unwrap();
        let local = entry(SocketAddr::from(([127, 0, 0, 1], 0x1F90))).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(find_uid(table, &peer, &local), Some(1000));
            assert_eq!(find_uid(table, &local, &peer), Some(0));
        }
    }
}
