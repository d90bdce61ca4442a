//! `maas`: MAAS's metadata service answers this node's own credentials, the
//! ones its status events are signed with. The datasource config curtin
//! wrote (`90_maas_cloud_config.cfg`) gives the metadata URL and tokens; a
//! GET of `latest/meta-data/instance-id` signed with them must answer the
//! node's system id. A 401 that carries MAAS's clock is tried once more
//! with the timestamp corrected, as cloud-init does, and the skew is told.
//! No datasource config is skip (not a MAAS node); one that cannot be read
//! is error; no answer or a refusal is fail.

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use reqwest::Method;

use super::{Check, Finding, Inputs, fail, pass, skip};
use crate::maas::http::{Answer, Client};

/// A skew below this is not why MAAS refused (piston allows five minutes).
const SKEW_WORTH_A_RETRY: i64 = 5;

pub struct Metadata;

#[async_trait]
impl Check for Metadata {
    fn name(&self) -> &'static str {
        "maas"
    }
    async fn run(&self, i: &Inputs<'_>) -> Result<Finding> {
        let Some(ds) = crate::maas::datasource(i.root)? else {
            return Ok(skip(format!("not a MAAS-deployed node: no {}", crate::maas::DATASOURCE_CFG)));
        };
        let url = ds.url.join("latest/meta-data/instance-id").context("joining the metadata URL")?;
        let client = Client::new(i.root, &i.node.maas_servers);
        let each = i.query_timeout / 2;
        let mut got = client.send(Method::GET, &url, &ds.key, None, each).await;
        let clock = matches!(&got, Ok(a) if matches!(a.status, 401 | 403)) && client.skew().abs() > SKEW_WORTH_A_RETRY;
        if clock {
            got = client.send(Method::GET, &url, &ds.key, None, each).await;
        }
        let skew = if client.skew().abs() > SKEW_WORTH_A_RETRY {
            format!("; MAAS's clock is {:+}s from this node's, corrected in the OAuth timestamp", client.skew())
        } else {
            String::new()
        };
        Ok(match got {
            Ok(a) if a.success() => known(i, &a, &skew)?,
            Ok(a) if matches!(a.status, 401 | 403) => {
                fail(format!("GET {url}: {}: MAAS refuses this node's credentials{skew}", a.brief()))
            }
            Ok(a) => fail(format!("GET {url}: {}{skew}", a.brief())),
            Err(why) => fail(why),
        })
    }
}

/// A good answer: the system id, checked against the machine the status
/// events are posted for.
fn known(i: &Inputs<'_>, a: &Answer, skew: &str) -> Result<Finding> {
    let id = a.body.trim();
    let posting_to = crate::maas::reporting(i.root)
        .ok()
        .flatten()
        .and_then(|r| r.url.path_segments().and_then(|mut s| s.rfind(|p| !p.is_empty()).map(str::to_owned)));
    Ok(match posting_to {
        Some(other) if other != id => fail(format!(
            "MAAS knows this node as {id}, but {} posts its events for {other}",
            crate::maas::REPORTING_CFG
        )),
        _ => pass(format!("MAAS answers this node's credentials: it is {id}{skew}")),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use node_init_tests::maas::Metadata;
    use node_init_tests::net::Background;

    use super::*;
    use crate::checks::Status;
    use crate::config::Config;
    use crate::node::Node;
    use crate::root::Root;
    use crate::runner::Recording;

    const KEY: &str = "Cq7consumer:Tk9nodetoken:Sx3nodesecret";

    fn check(root: &Root) -> Result<Finding> {
        let (config, node, runner) = (Config::default(), Node::default(), Recording::new());
        let i = Inputs::new(root, &config, &node, &runner, Duration::from_secs(4));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(Metadata.run(&i))
    }

    fn world(key: &str) -> (Background, node_init_tests::maas::Metadata, tempfile::TempDir, Root) {
        let bg = Background::new();
        let m = Metadata::start(&bg, "xk4pfa", key);
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        m.curtin_files(t.path());
        (bg, m, t, root)
    }

    #[test]
    fn the_metadata_service_answering_the_nodes_credentials_passes() {
        let (_bg, _m, _t, root) = world(KEY);
        let f = check(&root).unwrap();
        assert_eq!(f.status, Status::Pass, "{}", f.reason);
        assert_eq!(f.reason, "MAAS answers this node's credentials: it is xk4pfa");
    }

    #[test]
    fn a_clock_maas_refuses_is_corrected_from_its_date_as_cloud_init_does() {
        let (_bg, m, _t, root) = world(KEY);
        m.clock_offset(3600);
        let f = check(&root).unwrap();
        assert_eq!(f.status, Status::Pass, "{}", f.reason);
        assert!(f.reason.contains("MAAS's clock is +36"), "{}", f.reason);
        let gets = m.requests().iter().filter(|r| r.starts_with("GET")).count();
        assert_eq!(gets, 2, "one refusal, one corrected try");
    }

    #[test]
    fn credentials_maas_does_not_know_fail_without_quoting_them() {
        let (_bg, m, t, root) = world(KEY);
        // The node holds other tokens than the ones MAAS issued.
        let cfg = t.path().join("etc/cloud/cloud.cfg.d/90_maas_cloud_config.cfg");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("Tk9nodetoken", "Tk0stale")
            .replace("Sx3nodesecret", "Sx0stale");
        std::fs::write(&cfg, text).unwrap();
        let f = check(&root).unwrap();
        assert_eq!(f.status, Status::Fail, "{}", f.reason);
        assert!(f.reason.contains("HTTP 401") && f.reason.contains("refuses this node's credentials"), "{}", f.reason);
        assert!(!f.reason.contains("Tk0stale") && !f.reason.contains("Sx0"), "{}", f.reason);
        assert_eq!(m.requests().len(), 1, "no retry when the clock is not the reason");
    }

    #[test]
    fn no_datasource_is_skip_a_broken_one_is_error_and_no_answer_is_fail() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path()).unwrap();
        assert_eq!(check(&root).unwrap().status, Status::Skip);
        root.write(
            crate::maas::DATASOURCE_CFG,
            b"datasource:\n  MAAS:\n    metadata_url: http://127.0.0.1:1/MAAS/metadata/\n",
            0o600,
        )
        .unwrap();
        let e = format!("{:#}", check(&root).unwrap_err());
        assert!(e.contains("datasource.MAAS.consumer_key is missing"), "{e}");
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let cfg = format!(
            "datasource:\n  MAAS:\n    metadata_url: http://{dead}/MAAS/metadata/\n    consumer_key: c\n    token_key: t\n    token_secret: s\n"
        );
        root.write(crate::maas::DATASOURCE_CFG, cfg.as_bytes(), 0o600).unwrap();
        let f = check(&root).unwrap();
        assert_eq!(f.status, Status::Fail, "{}", f.reason);
        assert!(
            f.reason.contains(&format!("GET http://{dead}/MAAS/metadata/latest/meta-data/instance-id")),
            "{}",
            f.reason
        );
    }

    #[test]
    fn events_posted_for_another_machine_fail() {
        let (_bg, _m, t, root) = world(KEY);
        let cfg = t.path().join("etc/cloud/cloud.cfg.d/90_maas_cloud_init_reporting.cfg");
        std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("/status/xk4pfa", "/status/other1"))
            .unwrap();
        let f = check(&root).unwrap();
        assert_eq!(f.status, Status::Fail, "{}", f.reason);
        assert!(f.reason.contains("MAAS knows this node as xk4pfa") && f.reason.contains("for other1"), "{}", f.reason);
    }
}
