//! A MAAS metadata stand-in for clock checks: plain HTTP whose `Date`
//! header runs on a clock of its own, `offset_secs` from this machine's;
//! and the NTP server a MAAS rack controller runs (chrony), as an SNTP
//! server on this machine's clock.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use crate::net::{Background, head_of};

/// A plain HTTP server on `addr` whose clock is `offset_secs` from this
/// machine's: every request is answered 200 with that clock in `Date`, as
/// MAAS's metadata service answers (a node's clock check reads it).
/// Returns the bound address.
pub fn clock_server(bg: &Background, addr: SocketAddr, offset_secs: i64) -> SocketAddr {
    let listener = bg.listen(addr);
    let bound = listener.local_addr().expect("local addr");
    bg.spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if head_of(&mut client).await.is_some() {
                    let now = std::time::SystemTime::now();
                    let shift = std::time::Duration::from_secs(offset_secs.unsigned_abs());
                    let theirs = if offset_secs >= 0 { now + shift } else { now - shift };
                    let date = httpdate::fmt_http_date(theirs);
                    let answer = format!("HTTP/1.1 200 OK\r\nDate: {date}\r\nContent-Length: 0\r\n\r\n");
                    let _ = client.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    bound
}

/// Seconds from NTP's epoch (1900) to Unix's.
const NTP_UNIX: u64 = 2_208_988_800;

/// An NTP server on UDP `addr` answering every client request (mode 3)
/// as a synchronised stratum-2 server on this machine's clock (RFC 5905
/// §7.3): leap indicator 0, version as asked, mode 4, the client's
/// transmit time as the origin, receive and transmit times now. What
/// systemd-timesyncd checks before it accepts an answer
/// (`manager_receive_response` in src/timesync/timesyncd-manager.c): the
/// origin matching what it sent, not "not in sync", mode server, stratum
/// 1 to 15, a root distance under 5 s. Returns the bound address.
pub fn ntp_server(bg: &Background, addr: SocketAddr) -> SocketAddr {
    let socket = std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("NTP on {addr}: {e}"));
    socket.set_nonblocking(true).expect("nonblocking");
    let bound = socket.local_addr().expect("local addr");
    bg.spawn(async move {
        let socket = tokio::net::UdpSocket::from_std(socket).expect("tokio socket");
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if n < 48 || buf[0] & 0x07 != 3 {
                continue;
            }
            let received = ntp_now();
            let mut answer = [0u8; 48];
            answer[0] = buf[0] & 0x38 | 4; // LI 0, the client's version, mode 4
            answer[1] = 2; // stratum
            answer[2] = buf[2]; // poll
            answer[3] = 0xec; // precision: 2^-20 s
            answer[8..12].copy_from_slice(&0x0000_0100u32.to_be_bytes()); // root dispersion ~4 ms
            answer[12..16].copy_from_slice(&[127, 127, 1, 1]); // reference id
            answer[16..24].copy_from_slice(&received);
            answer[24..32].copy_from_slice(&buf[40..48]); // origin: the client's transmit
            answer[32..40].copy_from_slice(&received);
            answer[40..48].copy_from_slice(&ntp_now());
            let _ = socket.send_to(&answer, peer).await;
        }
    });
    bound
}

/// This machine's clock as an NTP timestamp (seconds, 32-bit fraction).
fn ntp_now() -> [u8; 8] {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    let secs = u32::try_from((d.as_secs() + NTP_UNIX) & 0xffff_ffff).expect("masked");
    let frac = u32::try_from((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000).expect("under 2^32");
    let mut ts = [0u8; 8];
    ts[..4].copy_from_slice(&secs.to_be_bytes());
    ts[4..].copy_from_slice(&frac.to_be_bytes());
    ts
}
