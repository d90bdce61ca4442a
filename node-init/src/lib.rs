//! node-init: first-boot provisioning for MAAS-deployed kubeadm nodes.
//!
//! The crate is the whole program; `main.rs` only calls [`cli::main`].
//! Host paths go through [`root::Root`], commands through
//! [`runner::Runner`], and the first-boot stages are listed in one table in
//! [`stages`].

pub mod checks;
pub mod cli;
pub mod config;
pub mod cri;
pub mod distro;
pub mod dns;
pub mod error;
pub mod jws;
pub mod logging;
pub mod maas;
pub mod neighbours;
pub mod net;
pub mod node;
pub mod pipeline;
pub mod pki;
pub mod retry;
pub mod root;
pub mod runner;
pub mod secret;
pub mod stages;
pub mod state;
#[cfg(test)]
mod testing;
