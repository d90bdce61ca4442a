use super::*;
use serde_json::json;

#[test]
fn every_secret_key_reads_scrubbed_and_nothing_else_changes() {
    let mut doc = json!({
        "dns": {"domain": "maas"},
        "kubernetes": {"role": "init", "token": "abcdef.0123456789abcdef", "certificate_key": "aa",
                       "ca": {"cert": "CERT", "key": "KEY"}, "endpoint": "10.0.0.1:6443"},
    });
    let changed = scrub_doc(&mut doc);
    assert_eq!(changed, ["kubernetes.token", "kubernetes.certificate_key", "kubernetes.ca.key"]);
    assert_eq!(
        doc,
        json!({
            "dns": {"domain": "maas"},
            "kubernetes": {"role": "init", "token": "scrubbed", "certificate_key": "scrubbed",
                           "ca": {"cert": "CERT", "key": "scrubbed"}, "endpoint": "10.0.0.1:6443"},
        })
    );
    assert!(scrub_doc(&mut doc).is_empty(), "scrubbing twice changes nothing");
    let mut other = json!({"proxy": {"http": "http://p:3128"}});
    assert!(scrub_doc(&mut other).is_empty());
}

#[test]
fn a_scrubbed_config_file_still_loads_as_the_same_role() {
    let text = "kubernetes:\n  role: worker\n  endpoint: 10.0.0.1:6443\n  token: abcdef.0123456789abcdef\n  \
                ca_cert_hashes: [sha256:0000000000000000000000000000000000000000000000000000000000000000]\n";
    let (new, keys) = scrub_config_text(text, "f").unwrap().unwrap();
    assert_eq!(keys, ["kubernetes.token"]);
    assert!(new.starts_with("# The join material") && !new.contains("0123456789abcdef"), "{new}");
    let k = crate::config::parse(&new, "f").unwrap().kubernetes.unwrap();
    assert!(k.scrubbed() && k.token().is_none());
    assert_eq!(k.role(), crate::config::Role::Worker);
    assert!(scrub_config_text(&new, "f").unwrap().is_none());
}

#[test]
fn cloud_config_is_scrubbed_in_its_node_init_key_and_base64_write_files() {
    use base64::Engine;
    let layer = "kubernetes:\n  token: abcdef.0123456789abcdef\n  certificate_key: aa\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(layer);
    let ud = format!(
        "#cloud-config\npackages: [curl]\nwrite_files:\n- path: /etc/other\n  content: keep\n- path: \
         /etc/node-init/config.d/50-userdata.yaml\n  encoding: b64\n  permissions: '0600'\n  content: {b64}\n\
         node_init:\n  kubernetes:\n    token: abcdef.0123456789abcdef\n"
    );
    let (new, keys) = scrub_cloud_config(&ud, "ud").unwrap().unwrap();
    assert_eq!(
        keys,
        [
            "node_init.kubernetes.token",
            "write_files /etc/node-init/config.d/50-userdata.yaml: kubernetes.token",
            "write_files /etc/node-init/config.d/50-userdata.yaml: kubernetes.certificate_key",
        ]
    );
    assert!(new.starts_with("#cloud-config\n") && !new.contains("0123456789abcdef") && !new.contains(&b64), "{new}");
    assert!(new.contains("/etc/other") && new.contains("curl") && new.contains("'0600'") || new.contains("\"0600\""));
    assert_eq!(material_left(new.as_bytes(), "ud"), None);
    assert!(material_left(ud.as_bytes(), "ud").is_some());
}

#[test]
fn mime_parts_are_scrubbed_in_place_whether_7bit_or_base64() {
    use base64::Engine;
    let part = "#cloud-config\nnode_init:\n  kubernetes:\n    token: abcdef.0123456789abcdef\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(part);
    for (encoding, body) in [("7bit", part.to_owned()), ("base64", b64.clone())] {
        let mime = format!(
            "Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX\nContent-Type: \
             text/x-shellscript\n\n#!/bin/sh\necho hi\n--XX\nContent-Type: text/cloud-config\n\
             Content-Transfer-Encoding: {encoding}\n\n{body}\n--XX--\n"
        );
        assert!(material_left(mime.as_bytes(), "ud").is_some(), "{encoding}");
        let (new, keys) = scrub_mime(&mime, "ud").unwrap().unwrap();
        assert_eq!(keys, ["MIME part: node_init.kubernetes.token"], "{encoding}");
        assert!(!new.contains("0123456789abcdef") && !new.contains(&b64) && new.contains("echo hi"), "{new}");
        assert_eq!(material_left(new.as_bytes(), "ud"), None, "{encoding}: {new}");
    }
}

#[test]
fn the_kubeadm_config_loses_its_token_and_certificate_key_by_key_without_knowing_them() {
    let text = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: \
                abcdef.0123456789abcdef\n  ttl: 24h0m0s\ncertificateKey: aa\n---\ndiscovery:\n  bootstrapToken:\n    \
                token: abcdef.0123456789abcdef\n  tlsBootstrapToken: abcdef.0123456789abcdef\ncontrolPlane:\n  \
                certificateKey: bb\n";
    let new = scrub_kubeadm_config(text);
    assert_eq!(
        new,
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: scrubbed\n  ttl: \
         24h0m0s\ncertificateKey: scrubbed\n---\ndiscovery:\n  bootstrapToken:\n    token: scrubbed\n  \
         tlsBootstrapToken: scrubbed\ncontrolPlane:\n  certificateKey: scrubbed\n"
    );
    assert_eq!(scrub_kubeadm_config(&new), new);
}
