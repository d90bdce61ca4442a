//! `time_sync`: the clock is synchronised, and close to MAAS's. TLS
//! certificates kubeadm issues start "now", etcd's leases and MAAS's OAuth
//! timestamps all assume clocks agree.
//!
//! Synchronised is the kernel's NTP status (adjtimex's STA_UNSYNC, which
//! the workspace's `unsafe_code = "deny"` keeps out of reach), asked of
//! `timedatectl` (timedated reads exactly that, whichever daemon keeps
//! time), else of `chronyc tracking` on a node without systemd. The offset
//! is the `Date` header of MAAS's metadata URL (from curtin's
//! `90_*maas*.cfg`) against this clock at the request's midpoint: a
//! one-second header, so the figure is good to half a second. Over
//! `time.max_skew` (2s) fails. Either figure failing is a fail; neither
//! failing but one unknown is "could not run". Not a MAAS node: skip.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;

use super::egress::{connect, open_tls, resolve, step, tls_config};
use super::{Check, Finding, Inputs, fail, pass, skip};
use crate::runner::Cmd;

/// chrony's reference id for its own clock (`local` in chrony.conf).
const CHRONY_LOCAL: &str = "7F7F0101";

pub struct TimeSync;

#[async_trait]
impl Check for TimeSync {
    fn name(&self) -> &'static str {
        "time_sync"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let Some(url) = crate::maas::metadata_url(i.root)? else {
            return Ok(skip(format!("not a MAAS-deployed node: no metadata_url in {}/90_*maas*.cfg", CFG_DIR)));
        };
        let (synced, skew) = tokio::join!(synchronised(i), skew(i, &url));
        Ok(verdict(synced, skew, i.config.time.max_skew.0)?)
    }
}

const CFG_DIR: &str = crate::maas::CLOUD_CFG_DIR;

/// Whether the kernel's clock is synchronised, and who said so.
type Synced = (bool, String);

/// Both figures into one finding; `Err` when neither fails and one is
/// unknown.
fn verdict(synced: Result<Synced, String>, skew: Result<(f64, String), String>, max: Duration) -> Result<Finding> {
    let max_s = max.as_secs_f64();
    let sync_text = match &synced {
        Ok((true, by)) => format!("synchronised ({by})"),
        Ok((false, by)) => format!("not synchronised ({by})"),
        Err(why) => format!("NTP status unknown ({why})"),
    };
    let skew_text = match &skew {
        Ok((s, maas)) => {
            let way = if *s > 0.0 { "behind" } else { "ahead of" };
            format!("clock {:.1}s {way} MAAS {maas}'s (max {})", s.abs(), humantime::format_duration(max))
        }
        Err(why) => format!("offset from MAAS unknown ({why})"),
    };
    let text = format!("{sync_text}; {skew_text}");
    let unsynced = matches!(synced, Ok((false, _)));
    let off = skew.as_ref().is_ok_and(|(s, _)| s.abs() > max_s);
    if unsynced || off {
        return Ok(fail(text));
    }
    if synced.is_err() || skew.is_err() {
        bail!("{text}");
    }
    Ok(pass(text))
}

/// The kernel's NTP status and who told it, or why nobody could, on one
/// line.
async fn synchronised(i: &Inputs<'_>) -> Result<Synced, String> {
    ntp_status(i).await.map_err(|why| why.lines().map(str::trim).collect::<Vec<_>>().join(" "))
}

async fn ntp_status(i: &Inputs<'_>) -> Result<Synced, String> {
    let limit = i.query_timeout.min(Duration::from_secs(5));
    let timedatectl = Cmd::new(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], limit);
    let why_not = match i.runner.run(&timedatectl).await.and_then(|o| o.check(&timedatectl)) {
        Ok(out) => match out.stdout.trim() {
            "yes" => return Ok((true, "timedatectl: NTPSynchronized=yes".into())),
            "no" => return Ok((false, "timedatectl: NTPSynchronized=no".into())),
            other => format!("timedatectl printed {other:?}"),
        },
        Err(e) => format!("{e:#}"),
    };
    let chronyc = Cmd::new(["chronyc", "-n", "tracking"], limit);
    match i.runner.run(&chronyc).await.and_then(|o| o.check(&chronyc)) {
        Ok(out) => chrony(&out.stdout).map_err(|e| format!("{why_not}; {e}")),
        Err(e) => Err(format!("{why_not}; {e:#}")),
    }
}

/// chronyc tracking's verdict: its leap status, and never its own clock.
fn chrony(text: &str) -> Result<Synced, String> {
    let field = |name: &str| {
        text.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim()))
    };
    let leap = field("Leap status").ok_or_else(|| format!("chronyc tracking printed no leap status: {text:?}"))?;
    let reference = field("Reference ID").unwrap_or_default();
    Ok(match leap {
        "Normal" | "Insert second" | "Delete second" if reference.starts_with(CHRONY_LOCAL) => {
            (false, "chronyc: only to its own local clock".to_owned())
        }
        "Normal" | "Insert second" | "Delete second" => (true, format!("chronyc: reference {reference}")),
        other => (false, format!("chronyc: leap status {other}")),
    })
}

/// MAAS's clock minus ours, in seconds, and MAAS's host.
async fn skew(i: &Inputs<'_>, url: &url::Url) -> Result<(f64, String), String> {
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
    let measured = async {
        let port = url.port_or_known_default().context("the metadata URL has no port")?;
        let authority = url.port().map_or_else(|| host.clone(), |p| format!("{host}:{p}"));
        // MAAS is on the node's own network and in NO_PROXY: asked directly.
        let (sent, wall, head) = if url.scheme() == "https" {
            let mut s = open_tls(i, &host, port, None, std::sync::Arc::new(tls_config(i)?)).await?;
            timed(i, &mut s, &authority, url.path()).await?
        } else {
            let addr = std::net::SocketAddr::new(resolve(i, &host).await?, port);
            let mut s = connect(i, addr, "MAAS").await?;
            timed(i, &mut s, &authority, url.path()).await?
        };
        let date = head.header("date").with_context(|| format!("{} has no Date header", head.status_line))?;
        let theirs = httpdate::parse_http_date(date)
            .ok()
            .with_context(|| format!("the Date header {date:?} is not an HTTP date"))?;
        // The header is truncated to the second: MAAS's clock is, on average,
        // half a second past it. Ours is taken at the exchange's midpoint.
        let ours = wall.duration_since(UNIX_EPOCH)?.as_secs_f64() + sent.as_secs_f64() / 2.0;
        Ok::<_, anyhow::Error>(theirs.duration_since(UNIX_EPOCH)?.as_secs_f64() + 0.5 - ours)
    };
    measured.await.map(|s| (s, host.clone())).map_err(|e| format!("GET {url}: {e:#}"))
}

/// One GET: how long it took, our clock when it started, and the head.
async fn timed<S>(
    i: &Inputs<'_>,
    s: &mut S,
    authority: &str,
    path: &str,
) -> Result<(Duration, SystemTime, super::http::Head)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (wall, started) = (SystemTime::now(), Instant::now());
    let head = step(i.query_timeout, "GET", super::http::get(s, authority, path)).await?;
    Ok((started.elapsed(), wall, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrony_is_synchronised_only_to_a_real_reference() {
        let t =
            |id: &str, leap: &str| format!("Reference ID    : {id}\nStratum         : 3\nLeap status     : {leap}\n");
        assert_eq!(
            chrony(&t("C0A80001 (192.168.0.1)", "Normal")).unwrap(),
            (true, "chronyc: reference C0A80001 (192.168.0.1)".into())
        );
        assert!(!chrony(&t("00000000 ()", "Not synchronised")).unwrap().0);
        assert!(!chrony(&t("7F7F0101 ()", "Normal")).unwrap().0, "chrony's own local clock is no time source");
        assert!(chrony("506 Cannot talk to daemon\n").is_err());
    }

    #[test]
    fn either_figure_failing_fails_and_an_unknown_one_alone_is_an_error() {
        let max = Duration::from_secs(2);
        let maas = |s: f64| Ok((s, "10.0.0.2".to_owned()));
        let yes = || Ok((true, "timedatectl: NTPSynchronized=yes".to_owned()));
        let f = verdict(yes(), maas(0.4), max).unwrap();
        assert_eq!(f.status, super::super::Status::Pass);
        assert_eq!(
            f.reason,
            "synchronised (timedatectl: NTPSynchronized=yes); clock 0.4s behind MAAS 10.0.0.2's (max 2s)"
        );
        let f = verdict(Err("no timedatectl".into()), maas(-600.2), max).unwrap();
        assert_eq!(f.status, super::super::Status::Fail);
        assert!(
            f.reason.contains("NTP status unknown (no timedatectl)") && f.reason.contains("clock 600.2s ahead of MAAS"),
            "{}",
            f.reason
        );
        let f = verdict(Ok((false, "timedatectl: NTPSynchronized=no".into())), Err("refused".into()), max).unwrap();
        assert_eq!(f.status, super::super::Status::Fail);
        let e = verdict(Err("no timedatectl".into()), maas(0.1), max).unwrap_err().to_string();
        assert!(e.contains("NTP status unknown (no timedatectl); clock 0.1s behind"), "{e}");
        assert!(verdict(yes(), Err("refused".into()), max).is_err());
    }
}
