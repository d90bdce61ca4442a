//! Layered configuration: `/etc/node-init/config.yaml` (the image's,
//! site-wide: proxy, CA, DNS), then `/etc/node-init/config.d/*.yaml` in name
//! order, then the user data's `node_init:` key (per node: role, token).
//! Maps merge key by key, a later layer wins, lists are replaced whole. The
//! merge remembers which layer set each key, so an error names the file
//! the bad key came from and `node-init config` can say where each key is
//! from.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// One layer: where it came from, and its document.
#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    pub value: Value,
}

/// The merged document, and the layer each key path (`kubernetes.token`,
/// `dns.nameservers`) was set by.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub value: Value,
    pub from: BTreeMap<String, String>,
}

/// Merges the layers in order.
pub fn merge(layers: &[Layer]) -> Merged {
    let mut merged = Merged { value: Value::Object(Map::new()), from: BTreeMap::new() };
    for layer in layers {
        if let Value::Object(m) = &layer.value {
            merge_map(&mut merged, "", m, &layer.name);
        }
    }
    merged
}

fn merge_map(into: &mut Merged, prefix: &str, m: &Map<String, Value>, layer: &str) {
    for (k, v) in m {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        let slot = pointer_mut(&mut into.value, prefix).and_then(Value::as_object_mut);
        let Some(target) = slot else { continue };
        match (target.get(k), v) {
            (Some(Value::Object(_)), Value::Object(child)) => merge_map(into, &path, child, layer),
            _ => {
                if let Value::Object(child) = v {
                    // A new map: record each of its keys, merging into an empty one.
                    target.insert(k.clone(), Value::Object(Map::new()));
                    into.from.insert(path.clone(), layer.to_owned());
                    merge_map(into, &path, child, layer);
                } else {
                    target.insert(k.clone(), v.clone());
                    // A replaced map or list forgets where its old parts were from.
                    into.from.retain(|p, _| !p.starts_with(&format!("{path}.")));
                    into.from.insert(path, layer.to_owned());
                }
            }
        }
    }
}

fn pointer_mut<'v>(v: &'v mut Value, dotted: &str) -> Option<&'v mut Value> {
    if dotted.is_empty() {
        return Some(v);
    }
    dotted.split('.').try_fold(v, |cur, key| cur.get_mut(key))
}

impl Merged {
    /// The layer a key (as an error names it: `dns.nameservers[1]`,
    /// `kubernetes.token`) came from: its own, else its nearest parent's.
    pub fn layer_of(&self, key: &str) -> Option<&str> {
        let mut path = key.split('[').next().unwrap_or(key).to_owned();
        loop {
            if let Some(l) = self.from.get(&path) {
                return Some(l);
            }
            let (parent, _) = path.rsplit_once('.')?;
            path = parent.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(name: &str, v: Value) -> Layer {
        Layer { name: name.into(), value: v }
    }

    #[test]
    fn maps_merge_key_by_key_later_wins_lists_are_replaced() {
        let m = merge(&[
            layer(
                "image",
                json!({"proxy": {"http": "http://p:3128", "no_proxy": ["a", "b"]}, "dns": {"domain": "dc1"}}),
            ),
            layer("site", json!({"proxy": {"no_proxy": ["c"]}, "dns": {"timeout": "2m"}})),
            layer("node", json!({"kubernetes": {"role": "worker"}, "dns": {"domain": "dc2"}})),
        ]);
        assert_eq!(
            m.value,
            json!({
                "proxy": {"http": "http://p:3128", "no_proxy": ["c"]},
                "dns": {"domain": "dc2", "timeout": "2m"},
                "kubernetes": {"role": "worker"},
            })
        );
        assert_eq!(m.layer_of("proxy.http"), Some("image"));
        assert_eq!(m.layer_of("proxy.no_proxy[0]"), Some("site"));
        assert_eq!(m.layer_of("dns.domain"), Some("node"));
        assert_eq!(m.layer_of("kubernetes.token"), Some("node"), "a missing key is its parent's");
        assert_eq!(m.layer_of("os.patch"), None);
    }

    #[test]
    fn a_scalar_over_a_map_replaces_it_and_its_origins() {
        let m = merge(&[layer("a", json!({"proxy": {"http": "x"}})), layer("b", json!({"proxy": null}))]);
        assert_eq!(m.value, json!({"proxy": null}));
        assert_eq!(m.layer_of("proxy.http"), Some("b"));
    }
}
