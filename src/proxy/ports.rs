//! Whose port is it: the uids of the sockets listening on a port where the proxy dials it
//! (`127.0.0.1`), read from the kernel's tables (`/proc/net/tcp` and `tcp6`, the `uid` column:
//! the account that created the socket). Multi-user mode's port proxy lets a user reach a port
//! only when every such listener is theirs ([`PortGate`]).

use std::net::Ipv4Addr;

use crate::error::AppError;
use crate::identity::Identity;

/// Decides whether `who` may reach `port` through the proxy (multi-user mode).
#[async_trait::async_trait]
pub trait PortGate: Send + Sync + 'static {
    async fn check(&self, who: &Identity, port: u16) -> Result<(), AppError>;
}

/// The `st` column's value for a listening socket.
const LISTEN: &str = "0A";

/// The uids of the sockets listening on `port` that a connection to `127.0.0.1:port` can
/// reach: bound to a loopback address or to any address, over IPv4 or (dual-stack) IPv6.
pub fn listeners(port: u16) -> std::io::Result<Vec<u32>> {
    let mut uids = vec![];
    for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        match std::fs::read_to_string(path) {
            Ok(table) => uids.extend(parse(&table, port, v6)),
            // No IPv6 in this kernel.
            Err(e) if v6 && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    uids.sort_unstable();
    uids.dedup();
    Ok(uids)
}

/// The listeners on `port` in one table (see [`listeners`]).
fn parse(table: &str, port: u16, v6: bool) -> Vec<u32> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, uid) = (fields.get(1)?, fields.get(3)?, fields.get(7)?);
            if *state != LISTEN {
                return None;
            }
            let (addr, p) = local.split_once(':')?;
            if u16::from_str_radix(p, 16).ok()? != port || !reaches_loopback(addr, v6) {
                return None;
            }
            uid.parse().ok()
        })
        .collect()
}

/// Whether a listener bound to `addr` (the table's hex, each 32-bit word in host order)
/// accepts connections to 127.0.0.1.
fn reaches_loopback(addr: &str, v6: bool) -> bool {
    let word = |i: usize| addr.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok());
    // The kernel prints the address's bytes as native-endian words: back to bytes the same way.
    let v4 = |w: u32| Ipv4Addr::from(w.to_ne_bytes());
    if !v6 {
        return word(0).map(v4).is_some_and(|a| a.is_unspecified() || a.is_loopback());
    }
    let Some(words) = (0..4).map(word).collect::<Option<Vec<u32>>>() else { return false };
    // `::` takes IPv4 too (unless IPV6_V6ONLY, which the table does not show: counted, the
    // safe way); `::ffff:127.x.y.z` is an IPv4 loopback address.
    let mapped = words[0] == 0 && words[1] == 0 && words[2].to_ne_bytes() == [0, 0, 0xff, 0xff];
    words.iter().all(|w| *w == 0) || (mapped && v4(words[3]).is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 1 1 0 100 0 0 10 0
   1: 00000000:0BB9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 2 1 0 100 0 0 10 0
   2: 0100007F:0BB8 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1003        0 3 1 0 100 0 0 10 0
   3: 0200000A:0BBA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1004        0 4 1 0 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BBB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1005        0 5 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0BBC 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1006        0 6 1 0 100 0 0 10 0
   2: 00000000000000000000000001000000:0BBD 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1007        0 7 1 0 100 0 0 10 0
";

    #[test]
    fn listeners_reachable_on_loopback_are_found_with_their_uid() {
        assert_eq!(parse(TCP, 3000, false), vec![1001], "listening on 127.0.0.1, not the connection");
        assert_eq!(parse(TCP, 3001, false), vec![1002], "0.0.0.0");
        assert_eq!(parse(TCP, 3002, false), Vec::<u32>::new(), "10.0.0.2 is not dialled");
        assert_eq!(parse(TCP6, 3003, true), vec![1005], "::");
        assert_eq!(parse(TCP6, 3004, true), vec![1006], "::ffff:127.0.0.1");
        assert_eq!(parse(TCP6, 3005, true), Vec::<u32>::new(), "::1 is not 127.0.0.1");
        assert_eq!(parse("garbage\nmore garbage here\n", 3000, false), Vec::<u32>::new());
    }

    #[test]
    fn a_real_listener_is_ours() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listeners(port).unwrap(), vec![crate::private_dir::current_uid()]);
        drop(l);
        assert_eq!(listeners(port).unwrap(), Vec::<u32>::new());
    }
}
