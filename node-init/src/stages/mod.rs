//! The first-boot stages, in the order they run.
//!
//! To add a stage: write `stages/NAME.rs` with a unit struct implementing
//! [`crate::pipeline::Stage`], and list it in [`TABLE`]. Nothing else
//! changes: `run`, `--only/--skip` and `status` all read the table.

pub mod dns;
pub mod kubernetes;
pub mod patch;
pub mod proxy;

use crate::pipeline::Stage;

pub const TABLE: &[&dyn Stage] =
    &[&proxy::ProxyStage, &patch::PatchStage, &dns::DnsStage, &kubernetes::KubernetesStage];
