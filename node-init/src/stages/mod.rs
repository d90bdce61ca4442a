//! The first-boot stages, in the order they run, and the contract they
//! implement ([`stage`]).
//!
//! To add a stage: write `stages/NAME/mod.rs` with a unit struct
//! implementing [`Stage`], and list it in [`TABLE`]. Nothing else changes:
//! `run`, `--only/--skip` and `status` all read the table.

pub mod ahead;
pub mod dns;
pub mod host;
pub mod kubernetes;
pub mod patch;
pub mod proxy;
pub mod stage;

pub use ahead::Ahead;
pub use stage::{Context, Details, Done, Fingerprint, Outcome, Stage};

/// The stages in the order they run. `host` comes right after `proxy`,
/// whose containerd drop-in it makes containerd read, and before `patch`,
/// so the patch's minutes of apt and dpkg can overlap the work that needs
/// only containerd and the network ([`ahead`]: the image pre-pull, the DNS
/// wait, a join's discovery). What `host` sets outlives the patch: the
/// modules and sysctls are in modules-load.d and sysctl.d for the kernel a
/// reboot brings, swap stays off through fstab and masks, and a containerd
/// upgrade keeps node-init's config.toml (apt keeps changed conffiles) and
/// is restarted by its package onto it. `host` comes before `dns` and
/// `kubernetes`, because kubeadm's preflight (and the checks `run` makes
/// before it) need swap off, forwarding on, the modules loaded and
/// containerd serving CRI.
pub const TABLE: &[&dyn Stage] =
    &[&proxy::ProxyStage, &host::HostStage, &patch::PatchStage, &dns::DnsStage, &kubernetes::KubernetesStage];
