//! One HTTP/1.1 GET over a stream a check opened itself (plain TCP, a
//! CONNECT tunnel, TLS), of which only the answer's head is read: the
//! status and the headers. Checks ask a registry's `/v2/` and MAAS's
//! clock; neither needs a body, a redirect followed or a connection kept.

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most of a head read; an answer without an end within it is refused.
const MAX_HEAD: usize = 16 * 1024;

/// An answer's status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// As sent, e.g. `HTTP/1.1 401 Unauthorized`.
    pub status_line: String,
    pub code: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The first header called `name`, any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn parse(text: &str) -> Result<Self> {
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default().trim().to_owned();
        let code = status_line
            .strip_prefix("HTTP/")
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not an HTTP answer: {status_line:?}"))?;
        let headers =
            lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
        Ok(Self { status_line, code, headers })
    }
}

/// `GET path` with `Host: authority`; the answer's head.
pub async fn get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, authority: &str, path: &str) -> Result<Head> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: node-init\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.context("sending the request")?;
    s.flush().await.context("sending the request")?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            return Head::parse(&String::from_utf8_lossy(&head[..end]));
        }
        if head.len() > MAX_HEAD {
            bail!("the answer's head has no end within {MAX_HEAD} bytes");
        }
        let n = s.read(&mut buf).await.context("reading the answer")?;
        if n == 0 {
            bail!("the server closed the connection without answering");
        }
        head.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_and_headers_and_stops_at_the_blank_line() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (mut client, mut server) = tokio::io::duplex(4096);
        let head = rt.block_on(async {
            let answer = async {
                let mut req = vec![0u8; 512];
                let n = server.read(&mut req).await.unwrap();
                assert!(String::from_utf8_lossy(&req[..n]).starts_with("GET /v2/ HTTP/1.1\r\nHost: r.example\r\n"));
                let a = "HTTP/1.1 401 Unauthorized\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nwww-authenticate: Bearer\r\n\r\n{}";
                server.write_all(a.as_bytes()).await.unwrap();
            };
            let (head, ()) = tokio::join!(get(&mut client, "r.example", "/v2/"), answer);
            head.unwrap()
        });
        assert_eq!((head.code, head.status_line.as_str()), (401, "HTTP/1.1 401 Unauthorized"));
        assert_eq!(head.header("date"), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(head.header("WWW-Authenticate"), Some("Bearer"));
        assert!(Head::parse("SSH-2.0-OpenSSH_9.2").is_err());
    }
}
