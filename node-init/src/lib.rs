//! node-init: first-boot provisioning for MAAS-deployed kubeadm nodes.
//!
//! The crate is the whole program; `main.rs` only calls [`cli::main`].
//! Host paths go through [`root::Root`], commands through
//! [`runner::Runner`], and the first-boot stages are listed in one table in
//! [`stages`].

pub mod checks;
pub mod cli;
pub mod config;
pub mod distro;
pub mod dns;
pub mod jws;
pub mod logging;
pub mod maas;
pub mod net;
pub mod pipeline;
pub mod pki;
pub mod retry;
pub mod root;
pub mod runner;
pub mod secret;
pub mod stages;
pub mod state;

/// Exit codes shared by every subcommand (DESIGN.md §Exit codes).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const BAD_CONFIG: u8 = 2;
    pub const REBOOT_REQUIRED: u8 = 3;
}
