//! End-to-end tests: the real `node-init` binary against real stand-ins.
//! One entry point; shared helpers live in the crate's `src/lib.rs`.

mod boot;
mod cert_hash;
mod config_rejections;
mod crash;
mod image;
mod kubernetes;
pub(crate) mod patch;
mod rootfs;
mod upload;
mod user_data;
mod verify;
mod verify_net;
mod vm;
