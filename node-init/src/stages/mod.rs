//! The first-boot stages, in the order they run, and the contract they
//! implement ([`stage`]).
//!
//! To add a stage: write `stages/NAME/mod.rs` with a unit struct
//! implementing [`Stage`], and list it in [`TABLE`]. Nothing else changes:
//! `run`, `--only/--skip` and `status` all read the table.

pub mod dns;
pub mod kubernetes;
pub mod patch;
pub mod proxy;
pub mod stage;

pub use stage::{Context, Details, Done, Fingerprint, Outcome, Stage};

pub const TABLE: &[&dyn Stage] =
    &[&proxy::ProxyStage, &patch::PatchStage, &dns::DnsStage, &kubernetes::KubernetesStage];
