//! A MAAS metadata stand-in for clock checks: plain HTTP whose `Date`
//! header runs on a clock of its own, `offset_secs` from this machine's.

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
