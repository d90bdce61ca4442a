//! The MAAS stand-in's check of a request's OAuth 1.0 PLAINTEXT header,
//! as a MAAS region makes it: the consumer key and token it issued, the
//! signature (`&` then the token secret: the consumer secret is empty), a
//! timestamp within five minutes, a nonce never seen before. A refusal is
//! worded as MAAS words it, token included, so a test can check that
//! `node-image upload` does not echo it.

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

/// The API key the stand-in issued, and the nonces it has seen.
pub(super) struct Key {
    consumer: String,
    token: String,
    secret: String,
    nonces: HashSet<String>,
}

impl Key {
    /// `consumer:token:secret`, as `maas apikey` prints it.
    pub(super) fn parse(key: &str) -> Self {
        let [consumer, token, secret] = key.split(':').collect::<Vec<_>>()[..] else { panic!("key {key:?}") };
        Self {
            consumer: consumer.to_owned(),
            token: token.to_owned(),
            secret: secret.to_owned(),
            nonces: HashSet::new(),
        }
    }

    /// Accepts the Authorization `header`, or says why MAAS would not.
    pub(super) fn authorise(&mut self, header: Option<&str>) -> Result<(), String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        self.authorise_at(header, now, Some(300))
    }

    /// [`Key::authorise`] by a clock reading `now`, with a timestamp
    /// `window` in seconds (`None`: the timestamp need only be a number).
    pub(super) fn authorise_at(&mut self, header: Option<&str>, now: u64, window: Option<u64>) -> Result<(), String> {
        let header = header.ok_or("no Authorization header")?;
        let params = header.strip_prefix("OAuth ").ok_or("not an OAuth header")?;
        let mut fields = BTreeMap::new();
        for p in params.split(',') {
            let (k, v) = p.trim().split_once('=').ok_or_else(|| format!("malformed parameter {p:?}"))?;
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or_else(|| format!("unquoted {k}"))?;
            fields.insert(k.to_owned(), decode(v));
        }
        let get = |k: &str| fields.get(k).cloned().ok_or_else(|| format!("missing {k}"));
        if let Some(v) = fields.get("oauth_version")
            && v != "1.0"
        {
            return Err(format!("oauth_version {v:?}"));
        }
        if get("oauth_signature_method")? != "PLAINTEXT" {
            return Err("only PLAINTEXT signatures are accepted".into());
        }
        if get("oauth_consumer_key")? != self.consumer {
            return Err("Invalid consumer.".into());
        }
        let token = get("oauth_token")?;
        if token != self.token {
            return Err(format!("Invalid access token: {token}"));
        }
        let signature = get("oauth_signature")?;
        let (consumer_secret, token_secret) = signature.split_once('&').ok_or("malformed signature")?;
        if !consumer_secret.is_empty() || decode(token_secret) != self.secret {
            return Err("Invalid signature.".into());
        }
        let ts: u64 = get("oauth_timestamp")?.parse().map_err(|_| "malformed oauth_timestamp".to_owned())?;
        if window.is_some_and(|w| ts.abs_diff(now) > w) {
            return Err(format!("Expired timestamp: given {ts} and now {now}"));
        }
        let nonce = get("oauth_nonce")?;
        if nonce.is_empty() || !self.nonces.insert(nonce.clone()) {
            return Err(format!("Nonce already used: {nonce}"));
        }
        Ok(())
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
