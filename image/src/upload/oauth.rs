//! OAuth 1.0 PLAINTEXT signing for MAAS API keys: node-init's own
//! implementation (`node_init::maas::oauth`), the one a node signs its
//! status events with, so the two programs cannot drift apart.
//! [`ApiKey::parse`] checks a key's shape and never quotes it;
//! [`ApiKey::header`] gives a fresh `Authorization` value per request;
//! [`ApiKey::redact`] scrubs the key out of text MAAS sends back.

pub use node_init::maas::oauth::ApiKey;
