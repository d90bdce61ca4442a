//! kubeadm's detached JWS over cluster-info.
//!
//! The bootstrap signer in kube-controller-manager signs the `kubeconfig`
//! value of `kube-public/cluster-info` once per bootstrap token and stores
//! the compact JWS without its payload (`header..signature`) under
//! `jws-kubeconfig-<token-id>`. The algorithm is HS256 and the key is the
//! token secret, so whoever knows the token can check that cluster-info
//! came from the cluster that issued it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("the signature is not a detached compact JWS (header..signature)")]
    Malformed,
    #[error("the JWS header says {0}, expected HS256 for key id {1}")]
    Header(String, String),
    #[error("bad signature: cluster-info was not signed with this token's secret")]
    BadSignature,
}

/// Checks `jws` over `content` with the token's id and secret. The MAC is
/// compared in constant time.
pub fn verify_detached(jws: &str, content: &[u8], token_id: &str, secret: &[u8]) -> Result<(), JwsError> {
    let mut parts = jws.trim().split('.');
    let (Some(header_b64), Some(""), Some(sig_b64), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    let header = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| JwsError::Malformed)?;
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| JwsError::Malformed)?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| JwsError::Malformed)?;
    let alg = header.get("alg").and_then(|v| v.as_str()).unwrap_or("");
    let kid = header.get("kid").and_then(|v| v.as_str());
    if alg != "HS256" || kid.is_some_and(|k| k != token_id) {
        let said = format!("alg {alg:?}, kid {:?}", kid.unwrap_or(""));
        return Err(JwsError::Header(said, token_id.to_owned()));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| JwsError::Malformed)?;
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(URL_SAFE_NO_PAD.encode(content).as_bytes());
    mac.verify_slice(&sig).map_err(|_| JwsError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &[u8] = b"apiVersion: v1\nclusters: []\n";

    /// The API-server stand-in's signer, written independently of
    /// [`verify_detached`].
    fn sign(content: &[u8], kid: &str, secret: &[u8]) -> String {
        let text = |b: &[u8]| std::str::from_utf8(b).unwrap().to_owned();
        node_init_tests::kube::sign_detached(&text(content), kid, &text(secret))
    }

    /// The published vector of Kubernetes' own signer (cluster-bootstrap
    /// `jws.ComputeDetachedSignature`, go-jose underneath).
    #[test]
    fn kubernetes_own_test_vector_verifies() {
        let content = b"Hello from the other side. I must have called a thousand times.";
        let jws = "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8";
        assert_eq!(verify_detached(jws, content, "joshua", b"my voice is my passcode"), Ok(()));
        assert_eq!(verify_detached(jws, content, "joshua", b"my voice is my passcodE"), Err(JwsError::BadSignature));
        assert_eq!(sign(content, "joshua", b"my voice is my passcode"), jws);
    }

    #[test]
    fn a_good_signature_verifies() {
        let jws = sign(CONTENT, "abcdef", b"0123456789abcdef");
        assert_eq!(verify_detached(&jws, CONTENT, "abcdef", b"0123456789abcdef"), Ok(()));
    }

    #[test]
    fn another_secret_content_or_key_id_is_refused() {
        let jws = sign(CONTENT, "abcdef", b"0123456789abcdef");
        assert_eq!(verify_detached(&jws, CONTENT, "abcdef", b"0123456789abcdeX"), Err(JwsError::BadSignature));
        assert_eq!(
            verify_detached(&jws, b"apiVersion: v2\n", "abcdef", b"0123456789abcdef"),
            Err(JwsError::BadSignature)
        );
        assert!(matches!(verify_detached(&jws, CONTENT, "zzzzzz", b"0123456789abcdef"), Err(JwsError::Header(..))));
    }

    #[test]
    fn malformed_and_attached_forms_are_refused() {
        let jws = sign(CONTENT, "abcdef", b"0123456789abcdef");
        let (h, s) = jws.split_once("..").unwrap();
        let attached = format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(CONTENT));
        for bad in ["", "a.b", "a..b..c", attached.as_str(), &format!("{h}..!!")] {
            assert_eq!(verify_detached(bad, CONTENT, "abcdef", b"0123456789abcdef"), Err(JwsError::Malformed), "{bad}");
        }
        let none_alg = format!("{}..{s}", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"abcdef"}"#));
        assert!(matches!(
            verify_detached(&none_alg, CONTENT, "abcdef", b"0123456789abcdef"),
            Err(JwsError::Header(..))
        ));
    }
}
