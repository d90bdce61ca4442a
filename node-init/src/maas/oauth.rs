//! OAuth 1.0 PLAINTEXT signing (RFC 5849 §3.4.4) for MAAS credentials: the
//! one implementation node-init (a node's own tokens, for its status events
//! and the metadata API) and node-image (an operator's API key, for uploads)
//! both sign with.
//!
//! A MAAS API key is `consumer:token:secret` with an empty consumer secret;
//! a node's tokens are the same three parts, from cloud-init's config.
//! [`ApiKey::parse`] and [`ApiKey::new`] check their shape and never quote
//! them in an error; [`ApiKey::header`] gives a fresh `Authorization` value
//! (new nonce and timestamp) for each request, [`ApiKey::header_at`] the
//! same at a timestamp corrected for the server's clock; [`ApiKey::redact`]
//! scrubs the key out of text MAAS sends back.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// An API key's three parts. The token and secret never reach a message.
pub struct ApiKey {
    consumer: String,
    token: String,
    secret: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// Splits `consumer:token:secret`. The error says what is wrong in
    /// words (it names the part, never its text); the caller adds where the
    /// key came from.
    pub fn parse(key: &str) -> Result<Self, String> {
        let key = key.trim();
        let parts: Vec<&str> = key.split(':').collect();
        let [consumer, token, secret] = parts[..] else {
            return Err(format!(
                "expected consumer:token:secret (three parts separated by ':'), got {} part(s)",
                parts.len()
            ));
        };
        Self::new(consumer, token, secret)
    }

    /// The three parts given apart, as cloud-init's config holds a node's
    /// (`consumer_key`, `token_key`, `token_secret`); checked as in
    /// [`ApiKey::parse`].
    pub fn new(consumer: &str, token: &str, secret: &str) -> Result<Self, String> {
        for (part, what) in [(consumer, "consumer"), (token, "token"), (secret, "secret")] {
            if part.is_empty() {
                return Err(format!("the {what} part is empty"));
            }
            if !part.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("the {what} part holds a space or a non-ASCII character"));
            }
        }
        Ok(Self { consumer: consumer.to_owned(), token: token.to_owned(), secret: secret.to_owned() })
    }

    /// The `Authorization` header value, OAuth 1.0 PLAINTEXT (RFC 5849
    /// §3.5.1), with an empty consumer secret as MAAS issues keys.
    pub fn header(&self) -> String {
        self.header_at(timestamp())
    }

    /// [`ApiKey::header`] at `timestamp` (seconds since 1970): the local
    /// clock plus the skew learned from a server that refused it, as
    /// cloud-init's `OauthUrlHelper` does.
    pub fn header_at(&self, timestamp: u64) -> String {
        self.header_with(timestamp, &nonce())
    }

    /// [`ApiKey::header`] with the timestamp and nonce given.
    fn header_with(&self, timestamp: u64, nonce: &str) -> String {
        let signature = format!("&{}", encode(&self.secret));
        let fields = [
            ("oauth_version", "1.0"),
            ("oauth_signature_method", "PLAINTEXT"),
            ("oauth_consumer_key", &self.consumer),
            ("oauth_token", &self.token),
            ("oauth_signature", &signature),
            ("oauth_nonce", nonce),
            ("oauth_timestamp", &timestamp.to_string()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", encode(v)))
        .collect::<Vec<_>>()
        .join(", ");
        format!("OAuth realm=\"OAuth\", {fields}")
    }

    /// MAAS's error texts may quote the token it did not accept.
    pub fn redact(&self, text: &str) -> String {
        [&self.secret, &self.token, &self.consumer]
            .iter()
            .fold(text.to_owned(), |t, part| t.replace(part.as_str(), "<redacted>"))
    }
}

/// Seconds since 1970; 0 on a clock set before it. MAAS's API refuses a
/// timestamp more than five minutes from its own clock (piston's window),
/// which is why callers that can learn the server's time use
/// [`ApiKey::header_at`].
pub fn timestamp() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 128 random bits in hex: never repeated, so no request can be replayed.
fn nonce() -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).expect("the system's random source");
    hex::encode(raw)
}

/// RFC 5849 §3.6: everything but ALPHA, DIGIT, '-', '.', '_', '~'.
const OAUTH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, OAUTH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_oauth_plaintext_with_a_fresh_nonce() {
        let key = ApiKey::parse("cons:tok:s&c/r").expect("key");
        let (a, b) = (key.header(), key.header());
        assert!(a.starts_with("OAuth realm=\"OAuth\", "), "{a}");
        for field in [
            "oauth_version=\"1.0\"",
            "oauth_signature_method=\"PLAINTEXT\"",
            "oauth_consumer_key=\"cons\"",
            "oauth_token=\"tok\"",
            // "&" + secret, percent-encoded once for the signature and once
            // as a header parameter (RFC 5849 §3.4.4, §3.5.1).
            "oauth_signature=\"%26s%2526c%252Fr\"",
        ] {
            assert!(a.contains(field), "{field} missing in {a}");
        }
        let nonce = |h: &str| h.split("oauth_nonce=\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned);
        assert_ne!(nonce(&a), nonce(&b), "a nonce was reused");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    }

    #[test]
    fn the_header_for_a_given_time_and_nonce_is_exactly_this() {
        let key = ApiKey::parse(" cons:tok:sec\n").expect("key");
        assert_eq!(
            key.header_with(1_700_000_000, "0123abcd"),
            "OAuth realm=\"OAuth\", oauth_version=\"1.0\", oauth_signature_method=\"PLAINTEXT\", \
             oauth_consumer_key=\"cons\", oauth_token=\"tok\", oauth_signature=\"%26sec\", \
             oauth_nonce=\"0123abcd\", oauth_timestamp=\"1700000000\""
        );
    }

    #[test]
    fn parse_errors_name_the_part_and_never_the_key() {
        for (key, why) in [
            ("abc:def", "got 2 part(s)"),
            ("abc::ghi", "the token part is empty"),
            (":def:ghi", "the consumer part is empty"),
            ("abc:def:gh\u{e9}", "the secret part holds a space or a non-ASCII character"),
        ] {
            let e = ApiKey::parse(key).expect_err(key);
            assert!(e.contains(why), "{key:?}: {e}");
            assert!(!e.contains("def") && !e.contains("gh"), "{key:?}: the error shows the key: {e}");
        }
    }

    #[test]
    fn redact_scrubs_every_part() {
        let key = ApiKey::parse("Cq7:Tk9:Sx3").expect("key");
        assert_eq!(
            key.redact("Invalid access token: Tk9 (Sx3, Cq7)"),
            "Invalid access token: <redacted> (<redacted>, <redacted>)"
        );
    }
}
