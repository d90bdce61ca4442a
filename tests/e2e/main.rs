//! End-to-end tests: the real `node-init` and `node-image` binaries against
//! real stand-ins. One entry point; every stand-in and world these files
//! use lives in the crate's `src/`, and no file here imports another.

// The VM tier: the built image boots under QEMU and does the first boot.
mod boot;
// `node-init cert-hash` against openssl's SPKI digest.
mod cert_hash;
// Every rejected config document: exit 2, the key named, nothing written.
mod config_rejections;
// SIGKILL at any moment, then a rerun converges.
mod crash;
// The same over every stage: a proxy CA, dpkg mid-upgrade, kubeadm mid-join.
mod crash_stages;
// What MAAS hears from `node-init run`: events on the metadata stand-in.
mod events;
// `node-image build` against bases GNU tar made.
mod image;
// stderr as the journal reads it: a syslog priority on every line.
mod journal;
// The kubernetes stage with the kubeadm double in the real rootfs.
mod kubernetes;
// The patch stage with real apt in the real rootfs.
mod patch;
mod registry;
// The proxy CA in the real rootfs's trust store, as its curl sees it.
mod rootfs;
// The join material scrubbed from a node's disk once it joined.
mod secrets_at_rest;
// `node-init up` and `down` against the MAAS API stand-in.
mod up;
// `node-image upload` against the MAAS API stand-in.
mod upload;
// Config intake from cloud-init user data in its three encodings.
mod user_data;
// `node-init verify` on this machine's resources.
mod verify;
// `node-init verify` in a namespace: DNS, CIDRs, the VIP, egress.
mod verify_net;
// verify's peers check against namespaces that listen, refuse, lose and drop.
mod verify_peers;
// verify's stricter checks: wildcards, the clock, registries, ARP, etcd's disk.
mod verify_strict;
// The built image checked with its own systemd.
mod vm;
