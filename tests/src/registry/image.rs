//! A single-layer linux/amd64 image in Docker's schema 2, and its push
//! through the registry's v2 API as `docker push` makes it: each blob by
//! a monolithic upload (`POST /v2/NAME/blobs/uploads/`, then `PUT` of the
//! whole blob at the returned location with `digest=`), then the manifest
//! by tag.
//!
//! Schema 2 because containerd 1.6 asks for it first: its resolver's
//! `Accept` is the schema 2 manifest, the schema 2 list, the OCI manifest,
//! the OCI index, then `*` (remotes/docker/resolver.go `NewResolver`), and
//! Debian's registry 2.8 stores either.

use std::io::Read as _;
use std::net::SocketAddr;

use sha2::{Digest as _, Sha256};

use super::http::exchange;

pub const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An image's blobs and manifest, ready to push.
pub struct Image {
    layer: Vec<u8>,
    config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Image {
    /// One layer: a tar holding `filler` with `layer_bytes` random bytes
    /// (incompressible, so the layer's size on the wire is what was asked
    /// for), gzip'd without compression: deflate's stored blocks, which a
    /// compressor emits for such data anyway, cheap to make at any size
    /// and still inflated and checked by containerd. The
    /// config names the platform containerd's default matcher wants and the
    /// uncompressed layer's digest as its diff_id, which containerd checks
    /// when it unpacks.
    pub fn build(name: &str, layer_bytes: usize) -> Self {
        let mut filler = vec![0; layer_bytes];
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut filler)).expect("reading /dev/urandom");
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(layer_bytes as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "filler", filler.as_slice()).expect("tar");
        let tar = tar.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        let layer = gz.finish().expect("gzip");
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [digest(&tar)]},
            "history": [{"created_by": format!("node-init tests: {name}")}],
        });
        let config = serde_json::to_vec(&config).expect("config JSON");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "size": config.len(), "digest": digest(&config)},
            "layers": [{"mediaType": LAYER, "size": layer.len(), "digest": digest(&layer)}],
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest JSON");
        Self { layer, config, manifest }
    }
}

/// `sha256:HEX`, as the registry and containerd name content.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::hex(&Sha256::digest(bytes)))
}

/// Pushes `image` as `name:tag` to the registry at `registry`; returns the
/// manifest's digest, which the registry must agree with.
pub fn push(registry: SocketAddr, name: &str, tag: &str, image: &Image) -> String {
    upload(registry, name, &image.config);
    upload(registry, name, &image.layer);
    let target = format!("/v2/{name}/manifests/{tag}");
    let put = exchange(registry, "PUT", &target, &[("Content-Type", MANIFEST)], &image.manifest)
        .unwrap_or_else(|e| panic!("PUT {target}: {e}"));
    assert_eq!(put.status, 201, "PUT {target}: {}", put.describe());
    let want = digest(&image.manifest);
    assert_eq!(put.header("Docker-Content-Digest"), Some(want.as_str()), "PUT {target}");
    want
}

/// One blob by a monolithic upload.
fn upload(registry: SocketAddr, name: &str, blob: &[u8]) {
    let start = format!("/v2/{name}/blobs/uploads/");
    let post = exchange(registry, "POST", &start, &[], &[]).unwrap_or_else(|e| panic!("POST {start}: {e}"));
    assert_eq!(post.status, 202, "POST {start}: {}", post.describe());
    // The location is absolute (http://127.0.0.1:PORT/v2/...?_state=...);
    // the request goes to the same registry, so only its path and query.
    let location = post.header("Location").unwrap_or_else(|| panic!("POST {start}: no Location"));
    let path = location.find("/v2/").map_or(location, |i| &location[i..]);
    let sep = if path.contains('?') { '&' } else { '?' };
    let target = format!("{path}{sep}digest={}", digest(blob));
    let put = exchange(registry, "PUT", &target, &[("Content-Type", "application/octet-stream")], blob)
        .unwrap_or_else(|e| panic!("PUT {target}: {e}"));
    assert_eq!(put.status, 201, "PUT {start}...: {}", put.describe());
}
