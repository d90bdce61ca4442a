//! The first-boot stages, in the order they run, and the contract they
//! implement ([`stage`]).
//!
//! To add a stage: write `stages/NAME/mod.rs` with a unit struct
//! implementing [`Stage`], and list it in [`TABLE`]. Nothing else changes:
//! `run`, `--only/--skip` and `status` all read the table.

pub mod dns;
pub mod host;
pub mod kubernetes;
pub mod patch;
pub mod proxy;
pub mod stage;

pub use stage::{Context, Details, Done, Fingerprint, Outcome, Stage};

/// The stages in the order they run. `host` comes after `patch`, so a
/// kernel or containerd upgrade and the reboot it asks for happen first
/// (modules are loaded into the kernel that will run, containerd restarted
/// once, at its new version), and after `proxy`, whose containerd drop-in it
/// makes containerd read; it comes before `dns` and `kubernetes`, because
/// kubeadm's preflight (and the checks `run` makes before it) need swap off,
/// forwarding on, the modules loaded and containerd serving CRI.
pub const TABLE: &[&dyn Stage] =
    &[&proxy::ProxyStage, &patch::PatchStage, &host::HostStage, &dns::DnsStage, &kubernetes::KubernetesStage];
