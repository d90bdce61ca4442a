//! node-image: builds reproducible MAAS custom images with node-init and
//! `overlays/` baked in, and uploads them to MAAS (DESIGN.md §image
//! pipeline). The build and upload commands are not part of this version.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("node-image: error: `build` and `upload` are not available in this version of node-image");
    ExitCode::from(2)
}
